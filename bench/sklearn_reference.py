#!/usr/bin/env python3
"""scikit-learn reference for the fit benchmark (bench/src/bin/fit.rs).

Reads the train/eval observations the Rust bench wrote with `--dump-split DIR`
(one row per keyword and device: entity_id, device, att1..attN, clicks,
conversions), fits scikit-learn's DecisionTreeRegressor on the conversion rate
with the clicks as sample weights, and prints the median fit time and the eval
wmae / wmse / logloss, defined as in crs_domain::metrics.

With `--data RAW.csv[.gz]` it also aggregates the raw file as the data contract
does (exact duplicate rows dropped, conversions clipped to clicks, zero-click
rows dropped, clicks and conversions summed per (entity_id, device)) and checks
that the split files hold exactly those observations.

Tree settings (both max_depth=8, like v1's default):
  clicks-leaf   min_samples_leaf=1, min_weight_fraction_leaf=100 / train clicks:
                every leaf has at least 100 training clicks, as v1's
                min_leaf_clicks=100 (v1 also shrinks leaf rates, sklearn does not).
  rows-leaf     min_samples_leaf=20 (20 observations per leaf), a plain choice.

Usage:
  python3 bench/sklearn_reference.py --split /tmp/crs-split \
      [--data "$CRS_REAL_DATA"] [--repeats 5]
"""

import argparse
import statistics
import sys
import time

import numpy as np
import pandas as pd
import sklearn
from sklearn.tree import DecisionTreeRegressor

LOGLOSS_EPS = 1e-9
DEVICES = ["Computer", "Smartphone", "Tablet"]
MIN_LEAF_CLICKS = 100.0
MIN_SAMPLES_LEAF = 20


def score(predicted, clicks, conversions):
    """wmae, wmse and logloss per click, as crs_domain::metrics::score."""
    predicted = np.asarray(predicted, dtype=float)
    rate = conversions / clicks
    err = np.abs(predicted - rate)
    total = clicks.sum()
    q = np.clip(predicted, LOGLOSS_EPS, 1.0 - LOGLOSS_EPS)
    loss = -(conversions * np.log(q) + (clicks - conversions) * np.log(1.0 - q)).sum()
    return {
        "wmae": (clicks * err).sum() / total,
        "wmse": (clicks * err * err).sum() / total,
        "logloss": loss / total,
    }


def features(frame, attributes):
    """Device one-hot (fixed order) then the attributes, as float32."""
    devices = np.stack([(frame["device"] == d).to_numpy() for d in DEVICES], axis=1)
    return np.hstack([devices, frame[attributes].to_numpy()]).astype(np.float32)


def aggregate_raw(path):
    """The raw file cleaned and aggregated as the data contract does."""
    raw = pd.read_csv(path)
    read = len(raw)
    raw = raw.drop_duplicates()
    duplicates = read - len(raw)
    clipped = int((raw["Conversions"] > raw["Clicks"]).sum())
    raw["Conversions"] = raw["Conversions"].clip(upper=raw["Clicks"])
    zero = int((raw["Clicks"] == 0).sum())
    raw = raw[raw["Clicks"] > 0]
    obs = raw.groupby(["entity_id", "device"], sort=False).agg(
        clicks=("Clicks", "sum"), conversions=("Conversions", "sum")
    )
    print(
        f"raw {path}: {read} rows read, {duplicates} duplicates dropped, {clipped} conversions clipped, "
        f"{zero} zero-click rows dropped, {len(obs)} observations"
    )
    return obs


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", required=True, help="folder with train.csv and eval.csv from fit --dump-split")
    parser.add_argument("--data", help="the raw CSV (or .csv.gz), to check the split against")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    train = pd.read_csv(f"{args.split}/train.csv")
    evaluation = pd.read_csv(f"{args.split}/eval.csv")
    attributes = [c for c in train.columns if c.startswith("att")]
    print(
        f"split {args.split}: {len(train)} train observations ({train['clicks'].sum():.0f} clicks), "
        f"{len(evaluation)} eval observations ({evaluation['clicks'].sum():.0f} clicks), {len(attributes)} attributes"
    )

    if args.data:
        obs = aggregate_raw(args.data)
        both = pd.concat([train, evaluation]).set_index(["entity_id", "device"])[["clicks", "conversions"]]
        same = len(both) == len(obs) and both.sort_index().equals(obs.astype(both.dtypes.to_dict()).sort_index())
        print(f"  the split holds exactly these observations: {'yes' if same else 'NO'}")
        if not same:
            sys.exit(1)

    x_train, x_eval = features(train, attributes), features(evaluation, attributes)
    n_train, k_train = train["clicks"].to_numpy(float), train["conversions"].to_numpy(float)
    n_eval, k_eval = evaluation["clicks"].to_numpy(float), evaluation["conversions"].to_numpy(float)
    y_train = k_train / n_train

    configs = [
        (
            "sklearn clicks-leaf",
            dict(max_depth=8, min_samples_leaf=1, min_weight_fraction_leaf=MIN_LEAF_CLICKS / n_train.sum()),
        ),
        ("sklearn rows-leaf", dict(max_depth=8, min_samples_leaf=MIN_SAMPLES_LEAF)),
    ]
    print(f"scikit-learn {sklearn.__version__}, numpy {np.__version__}, pandas {pd.__version__}")
    print()
    print(f"{'fit x' + str(args.repeats):<22}{'median s':>10}{'min s':>10}{'max s':>10}{'leaves':>8}"
          f"{'wmae':>10}{'wmse':>10}{'logloss':>10}")
    for name, params in configs:
        seconds = []
        for _ in range(args.repeats):
            tree = DecisionTreeRegressor(random_state=0, **params)
            started = time.perf_counter()
            tree.fit(x_train, y_train, sample_weight=n_train)
            seconds.append(time.perf_counter() - started)
        m = score(tree.predict(x_eval), n_eval, k_eval)
        print(f"{name:<22}{statistics.median(seconds):>10.4f}{min(seconds):>10.4f}{max(seconds):>10.4f}"
              f"{tree.get_n_leaves():>8}{m['wmae']:>10.5f}{m['wmse']:>10.6f}{m['logloss']:>10.5f}")

    # The baselines, from the same split: they should match the Rust bench's.
    by_device = train.groupby("device")[["clicks", "conversions"]].sum()
    global_rate = k_train.sum() / n_train.sum()
    device_rate = evaluation["device"].map(by_device["conversions"] / by_device["clicks"]).fillna(global_rate)
    for name, predicted in [
        ("baseline: device", device_rate.to_numpy()),
        ("baseline: global", np.full(len(evaluation), global_rate)),
        ("baseline: zero", np.zeros(len(evaluation))),
    ]:
        m = score(predicted, n_eval, k_eval)
        print(f"{name:<22}{'':>38}{m['wmae']:>10.5f}{m['wmse']:>10.6f}{m['logloss']:>10.5f}")


if __name__ == "__main__":
    main()
