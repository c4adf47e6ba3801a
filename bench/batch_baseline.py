"""The batch pipeline a user would otherwise write in Python, timed on the same
files as the Rust batch benchmark (bench/src/bin/batch.rs runs it).

Fits a scikit-learn DecisionTreeRegressor (untimed) on the training file the way
v1 sees it (rows aggregated per entity_id and device, cr weighted by clicks),
then times read_csv -> predict -> to_csv(compression="gzip") on the input and
prints one JSON line: seconds, rows and peak resident memory.
"""

import argparse
import json
import resource
import time

import pandas as pd
from sklearn.tree import DecisionTreeRegressor

DEVICES = ["Computer", "Smartphone", "Tablet"]


def features(frame, attributes):
    x = frame[attributes].copy()
    for device in DEVICES:
        x[f"device={device}"] = (frame["device"] == device).astype("int8")
    return x


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument(
        "--chunksize", type=int, default=0,
        help="rows per read_csv chunk; 0 reads the whole file at once (needs ~6 GB per million rows)",
    )
    args = parser.parse_args()

    train = pd.read_csv(args.train)
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

    started = time.perf_counter()
    chunks = [pd.read_csv(args.input)] if args.chunksize == 0 else pd.read_csv(args.input, chunksize=args.chunksize)
    rows, parts = 0, []
    for frame in chunks:
        rates = model.predict(features(frame, attributes))
        parts.append(frame[["entity_id", "device"]].assign(cr=rates))
        rows += len(frame)
    out = pd.concat(parts).drop_duplicates(["entity_id", "device"])
    out.to_csv(args.output, index=False, compression="gzip")
    seconds = time.perf_counter() - started

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "rows": rows, "written": len(out), "peak_mb": peak_mb,
                      "chunksize": args.chunksize}))


if __name__ == "__main__":
    main()
