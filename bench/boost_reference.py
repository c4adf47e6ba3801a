#!/usr/bin/env python3
"""xgboost and lightgbm references for model v2 (bench/src/bin/fit.rs runs it).

Reads the train/eval observations the Rust bench wrote with `--dump-split DIR`
(one row per keyword and device: entity_id, device, att1..attN, clicks,
conversions) and fits gradient-boosted trees the way v2 does: the target is the
observed rate conversions / clicks, the sample weight the clicks, so the loss
is the click-weighted binomial log-loss.

  xgboost tuned    objective binary:logistic, tree_method hist. Grid: max_depth
                   2, 3, 4, 5, 6 x lambda 1, 5, 50 x subsample 1, 0.7 at
                   learning rate 0.1, plus max_depth 2..6 at learning rate 0.05
                   with the defaults (min_child_weight 1, lambda 1, subsample 1).
  lightgbm tuned   objective cross_entropy. Grid: num_leaves 4, 8, 16, 32, 64
                   (max_depth unlimited) x lambda_l2 0, 5, 50 x bagging_fraction
                   1, 0.7 (every iteration) at learning rate 0.1, plus num_leaves
                   4..64 at learning rate 0.05 with the defaults
                   (min_data_in_leaf 20, lambda_l2 0, no bagging).

The grids cover the same kinds of settings as v2's (depth, L2 penalty, row
subsampling) and more values of each.
  xgboost fixed    binary:logistic, 300 trees of depth 6, learning rate 0.05.

Each tuned library chooses its grid point and its number of trees by 5-fold
cross-validation on the training part only, folds grouped by keyword (a
keyword's rows are all in one fold), early stopping after 30 rounds without a
better mean validation log-loss (xgb.cv / lgb.cv), up to 3000 trees; then it is
refitted on the whole training part with the chosen values and tree count. The
holdout is never seen before scoring. Metrics are as in crs_domain::metrics
(logloss with predictions clipped to [1e-9, 1 - 1e-9]).

Prints a table, and with --json one JSON object per model on lines starting with
`RESULT `, which the Rust bench reads.

Usage:
  python3 bench/boost_reference.py --split DIR [--threads 2] [--json]
"""

import argparse
import itertools
import json
import sys
import time

import lightgbm as lgb
import numpy as np
import pandas as pd
import xgboost as xgb

LOGLOSS_EPS = 1e-9
DEVICES = ["Computer", "Smartphone", "Tablet"]
FOLDS = 5
EARLY_STOPPING = 30
MAX_TREES = 3000


def score(predicted, clicks, conversions):
    """wmae, wmse and logloss per click, as crs_domain::metrics::score."""
    predicted = np.asarray(predicted, dtype=float)
    rate = conversions / clicks
    err = np.abs(predicted - rate)
    total = clicks.sum()
    q = np.clip(predicted, LOGLOSS_EPS, 1.0 - LOGLOSS_EPS)
    loss = -(conversions * np.log(q) + (clicks - conversions) * np.log(1.0 - q)).sum()
    return {"wmae": (clicks * err).sum() / total, "wmse": (clicks * err * err).sum() / total, "logloss": loss / total}


def features(frame, attributes):
    devices = np.stack([(frame["device"] == d).to_numpy() for d in DEVICES], axis=1)
    return np.hstack([devices, frame[attributes].to_numpy()]).astype(np.float32)


def grouped_folds(entity_ids, k, seed=0):
    """(train index, validation index) pairs, each keyword in one validation part."""
    keywords = np.unique(entity_ids)
    rng = np.random.default_rng(seed)
    fold_of_keyword = dict(zip(rng.permutation(keywords), np.arange(len(keywords)) % k))
    fold = np.array([fold_of_keyword[e] for e in entity_ids])
    return [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(k)]


def progress(message):
    print(message, file=sys.stderr, flush=True)


def tune_xgboost(x, y, w, folds, threads):
    dtrain = xgb.DMatrix(x, label=y, weight=w, nthread=threads)
    results = []
    grid = [dict(max_depth=d, eta=0.1, reg_lambda=l, subsample=s)
            for d, l, s in itertools.product([2, 3, 4, 5, 6], [1.0, 5.0, 50.0], [1.0, 0.7])]
    grid += [dict(max_depth=d, eta=0.05, reg_lambda=1.0, subsample=1.0) for d in [2, 3, 4, 5, 6]]
    for point in grid:
        params = {
            "objective": "binary:logistic",
            "eval_metric": "logloss",
            "tree_method": "hist",
            "nthread": threads,
            "seed": 0,
            **point,
        }
        started = time.perf_counter()
        cv = xgb.cv(params, dtrain, num_boost_round=MAX_TREES, folds=folds, early_stopping_rounds=EARLY_STOPPING)
        results.append((cv["test-logloss-mean"].min(), len(cv), params))
        progress(f"xgboost {point}: {len(cv)} trees, cv logloss "
                 f"{cv['test-logloss-mean'].min():.5f} ({time.perf_counter() - started:.1f} s)")
    return min(results, key=lambda r: r[0])


def tune_lightgbm(x, y, w, folds, threads):
    results = []
    grid = [dict(num_leaves=n, learning_rate=0.1, lambda_l2=l, bagging_fraction=b, bagging_freq=1 if b < 1 else 0)
            for n, l, b in itertools.product([4, 8, 16, 32, 64], [0.0, 5.0, 50.0], [1.0, 0.7])]
    grid += [dict(num_leaves=n, learning_rate=0.05, lambda_l2=0.0, bagging_fraction=1.0, bagging_freq=0)
             for n in [4, 8, 16, 32, 64]]
    for point in grid:
        started = time.perf_counter()
        params = {
            "objective": "cross_entropy",
            "metric": "cross_entropy",
            **point,
            "num_threads": threads,
            "seed": 0,
            "verbosity": -1,
        }
        dtrain = lgb.Dataset(x, label=y, weight=w, params={"verbosity": -1})
        cv = lgb.cv(
            params,
            dtrain,
            num_boost_round=MAX_TREES,
            folds=folds,
            callbacks=[lgb.early_stopping(EARLY_STOPPING, verbose=False)],
        )
        curve = cv["valid cross_entropy-mean"]
        results.append((min(curve), int(np.argmin(curve)) + 1, params))
        progress(f"lightgbm {point}: {int(np.argmin(curve)) + 1} trees, cv logloss "
                 f"{min(curve):.5f} ({time.perf_counter() - started:.1f} s)")
    return min(results, key=lambda r: r[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", required=True, help="folder with train.csv and eval.csv from fit --dump-split")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="also print RESULT lines for the Rust bench")
    args = parser.parse_args()

    train = pd.read_csv(f"{args.split}/train.csv")
    evaluation = pd.read_csv(f"{args.split}/eval.csv")
    attributes = [c for c in train.columns if c.startswith("att")]
    x, x_eval = features(train, attributes), features(evaluation, attributes)
    n, k = train["clicks"].to_numpy(float), train["conversions"].to_numpy(float)
    n_eval, k_eval = evaluation["clicks"].to_numpy(float), evaluation["conversions"].to_numpy(float)
    y = k / n
    folds = grouped_folds(train["entity_id"].to_numpy(), FOLDS)
    print(f"xgboost {xgb.__version__}, lightgbm {lgb.__version__}; {len(train)} train rows, {len(evaluation)} eval rows")

    results = []

    def report(label, fit_seconds, search_seconds, trees, predicted, settings):
        m = score(predicted, n_eval, k_eval)
        results.append(dict(label=label, fit_seconds=fit_seconds, search_seconds=search_seconds, trees=trees,
                            settings=settings, **m))

    started = time.perf_counter()
    _, trees, params = tune_xgboost(x, y, n, folds, args.threads)
    search = time.perf_counter() - started
    started = time.perf_counter()
    booster = xgb.train(params, xgb.DMatrix(x, label=y, weight=n, nthread=args.threads), num_boost_round=trees)
    fit = time.perf_counter() - started
    settings = {key: params[key] for key in ["max_depth", "eta", "reg_lambda", "subsample"]}
    report("xgboost tuned", fit, search, trees, booster.predict(xgb.DMatrix(x_eval)), settings)

    started = time.perf_counter()
    _, trees, params = tune_lightgbm(x, y, n, folds, args.threads)
    search = time.perf_counter() - started
    started = time.perf_counter()
    model = lgb.train(params, lgb.Dataset(x, label=y, weight=n, params={"verbosity": -1}), num_boost_round=trees)
    fit = time.perf_counter() - started
    settings = {key: params[key] for key in ["num_leaves", "learning_rate", "lambda_l2", "bagging_fraction"]}
    report("lightgbm tuned", fit, search, trees, model.predict(x_eval), settings)

    fixed = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": 6, "eta": 0.05,
             "nthread": args.threads, "seed": 0}
    started = time.perf_counter()
    booster = xgb.train(fixed, xgb.DMatrix(x, label=y, weight=n, nthread=args.threads), num_boost_round=300)
    fit = time.perf_counter() - started
    report("xgboost fixed", fit, 0.0, 300, booster.predict(xgb.DMatrix(x_eval)), {"max_depth": 6, "eta": 0.05})

    print(f"{'model':<16}{'search s':>10}{'fit s':>8}{'trees':>7}{'wmae':>10}{'wmse':>11}{'logloss':>10}  settings")
    for r in results:
        print(f"{r['label']:<16}{r['search_seconds']:>10.2f}{r['fit_seconds']:>8.2f}{r['trees']:>7}"
              f"{r['wmae']:>10.5f}{r['wmse']:>11.6f}{r['logloss']:>10.5f}  {r['settings']}")
        if args.json:
            print("RESULT " + json.dumps(r))


if __name__ == "__main__":
    main()
