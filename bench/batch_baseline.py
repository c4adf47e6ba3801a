"""The batch pipeline a competent user would otherwise write in Python, timed on
the same files as the Rust batch benchmark (bench/src/bin/batch.rs runs it).

Fits a scikit-learn DecisionTreeRegressor (untimed) on the training file the way
v1 sees it (rows aggregated per entity_id and device, cr weighted by clicks),
then times read -> predict -> write gzip CSV on the input and prints one JSON
line: seconds, rows and peak resident memory.

The timed part is set up the way the benchmark is fairest to it:
- pyarrow's multithreaded CSV reader (faster than pandas' C reader here), reading
  only entity_id, device and the attributes the fitted tree splits on, as int8;
- one read of the whole file, or pyarrow's streaming reader in blocks of about
  --chunksize rows for files too large to hold;
- one output row per (entity_id, device), as ours;
- gzip level 1 for the output, the level the Rust batch writes.
"""

import argparse
import gzip
import json
import resource
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from sklearn.tree import DecisionTreeRegressor

DEVICES = ["Computer", "Smartphone", "Tablet"]
# Bytes of input per row, to turn --chunksize rows into pyarrow's block size.
BYTES_PER_ROW = 340


def features(frame, attributes):
    x = frame[attributes].to_numpy(dtype=np.float32)
    devices = frame["device"].to_numpy()
    one_hot = np.stack([(devices == d) for d in DEVICES], axis=1).astype(np.float32)
    return np.hstack([x, one_hot])


def fit(train_path):
    train = pd.read_csv(train_path, engine="pyarrow")
    attributes = [c for c in train.columns if c.startswith("att")]
    train["Conversions"] = train[["Conversions", "Clicks"]].min(axis=1)
    grouped = train.groupby(["entity_id", "device"], sort=False)
    observations = grouped[attributes].first().join(grouped[["Clicks", "Conversions"]].sum()).reset_index()
    observations = observations[observations["Clicks"] > 0]
    model = DecisionTreeRegressor(max_depth=8, min_weight_fraction_leaf=0.0, random_state=0)
    model.fit(
        features(observations, attributes),
        observations["Conversions"] / observations["Clicks"],
        sample_weight=observations["Clicks"],
    )
    return model, attributes


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument(
        "--chunksize", type=int, default=0,
        help="rows per streamed block; 0 reads the whole file at once",
    )
    args = parser.parse_args()

    model, attributes = fit(args.train)
    # Only the attributes the tree splits on are read; the others get zeros,
    # which the tree never looks at.
    split_on = sorted({int(f) for f in model.tree_.feature if 0 <= f < len(attributes)})
    needed = [attributes[i] for i in split_on]
    column_types = {name: pa.int8() for name in needed}
    column_types["entity_id"] = pa.int64()
    column_types["device"] = pa.string()
    convert = pacsv.ConvertOptions(include_columns=["entity_id", "device", *needed], column_types=column_types)

    def predict(table):
        frame = table.to_pandas()
        for name in attributes:
            if name not in column_types:
                frame[name] = np.int8(0)
        return frame[["entity_id", "device"]].assign(cr=model.predict(features(frame, attributes)))

    started = time.perf_counter()
    if args.chunksize == 0:
        parts = [predict(pacsv.read_csv(args.input, convert_options=convert))]
    else:
        read = pacsv.ReadOptions(block_size=args.chunksize * BYTES_PER_ROW)
        reader = pacsv.open_csv(args.input, read_options=read, convert_options=convert)
        parts = [predict(pa.Table.from_batches([batch])) for batch in reader]
    rows = sum(len(p) for p in parts)
    out = pd.concat(parts, ignore_index=True).drop_duplicates(["entity_id", "device"])
    with gzip.open(args.output, "wb", compresslevel=1) as sink:
        out.to_csv(sink, index=False)
    seconds = time.perf_counter() - started

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "rows": rows, "written": len(out), "peak_mb": peak_mb,
                      "chunksize": args.chunksize}))


if __name__ == "__main__":
    main()
