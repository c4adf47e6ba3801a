#!/usr/bin/env python3
"""Fits the lightgbm model MLServer serves in the online comparison: the size of a v2 run.

Reads a v2 model artifact (`model.json`, as train-service writes it) and the
observations that run was fitted on (`train.csv`: one row per keyword and
device, `entity_id,device,att1..attN,clicks,conversions`, as `online --compare`
writes them), and fits lightgbm on the same matrix v2 sees:

  columns   the artifact's feature pipeline: one 0/1 column per device it kept
            (`features.devices`, in order), then the attributes it kept
            (`features.attributes`, in order), as FP32;
  target    the rate conversions / clicks, weighted by the clicks
            (objective cross_entropy: the click-weighted log-loss, as v2);
  size      as many trees as the artifact holds, at most as deep as its deepest
            (max_depth, and num_leaves 2^depth so depth is the only limit), no
            early stopping;
  settings  the learning rate, L2 penalty, row subsample and smallest leaf
            hessian of the grid point v2 chose (`model.search`).

Writes `model.bst` and `model-settings.json` (the committed template beside
this script with the input's width filled in) into --out, a folder MLServer
serves as it is: `mlserver start DIR`. Prints both models' sizes; exits
non-zero if lightgbm grew fewer trees than v2 has.

Usage:
  python fit_model.py --artifact DIR/model.json --train DIR/train.csv --out DIR/model
"""

import argparse
import json
import pathlib
import sys

import lightgbm as lgb
import numpy as np
import pandas as pd

TEMPLATE = pathlib.Path(__file__).with_name("model-settings.json")


def depth(nodes, index=0):
    """Levels of splits below node `index` of one saved v2 tree (a leaf has 0)."""
    node = nodes[index]
    if node["left"] == 0 and node["right"] == 0:
        return 0
    return 1 + max(depth(nodes, node["left"]), depth(nodes, node["right"]))


def lgb_depth(structure):
    """Levels of splits of one tree of lightgbm's dump_model()."""
    if "split_index" not in structure:
        return 0
    return 1 + max(lgb_depth(structure["left_child"]), lgb_depth(structure["right_child"]))


def matrix(frame, devices, attributes):
    one_hot = np.stack([(frame["device"] == d).to_numpy() for d in devices], axis=1)
    return np.hstack([one_hot, frame[attributes].to_numpy()]).astype(np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", required=True, type=pathlib.Path, help="the v2 run's model.json")
    parser.add_argument("--train", required=True, type=pathlib.Path, help="the observations v2 was fitted on")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="folder for model.bst and model-settings.json")
    parser.add_argument("--threads", type=int, default=2, help="lightgbm's threads while fitting")
    args = parser.parse_args()

    artifact = json.loads(args.artifact.read_text())
    if artifact.get("model_ver") != "v2":
        sys.exit(f"{args.artifact}: model_ver is {artifact.get('model_ver')!r}, not v2")
    devices = artifact["features"]["devices"]
    attributes = artifact["features"]["attributes"]
    booster = artifact["model"]
    trees = booster["trees"]
    v2_depth = max(depth(tree["nodes"]) for tree in trees)
    v2_nodes = sum(len(tree["nodes"]) for tree in trees)
    search = booster["search"]
    chosen = search["points"][search["chosen"]]["values"]

    frame = pd.read_csv(args.train)
    missing = [a for a in attributes if a not in frame.columns]
    if missing:
        sys.exit(f"{args.train}: no column(s) {', '.join(missing)} the artifact's pipeline reads")
    x = matrix(frame, devices, attributes)
    if x.shape[1] != booster["n_features"]:
        sys.exit(f"matrix has {x.shape[1]} columns, the artifact's model {booster['n_features']}")
    clicks = frame["clicks"].to_numpy(dtype=float)
    rate = frame["conversions"].to_numpy(dtype=float) / clicks

    params = {
        "objective": "cross_entropy",
        "learning_rate": chosen["learning_rate"],
        "max_depth": v2_depth,
        "num_leaves": 2**v2_depth,
        "lambda_l2": chosen["l2"],
        "min_sum_hessian_in_leaf": chosen["min_leaf_weight"],
        "bagging_fraction": chosen["subsample"],
        "bagging_freq": 1 if chosen["subsample"] < 1 else 0,
        "seed": 42,
        "num_threads": args.threads,
        "deterministic": True,
        "verbose": -1,
    }
    model = lgb.train(params, lgb.Dataset(x, label=rate, weight=clicks), num_boost_round=len(trees))
    dump = model.dump_model()["tree_info"]
    lgb_trees = len(dump)
    lgb_max_depth = max(lgb_depth(t["tree_structure"]) for t in dump)
    lgb_nodes = sum(2 * t["num_leaves"] - 1 for t in dump)

    args.out.mkdir(parents=True, exist_ok=True)
    model.save_model(str(args.out / "model.bst"))
    settings = json.loads(TEMPLATE.read_text())
    settings["inputs"][0]["shape"] = [-1, x.shape[1]]
    (args.out / "model-settings.json").write_text(json.dumps(settings, indent=2) + "\n")

    print(f"observations {len(frame)}, matrix columns {x.shape[1]} ({len(devices)} devices + {len(attributes)} attributes)")
    print(f"v2       trees {len(trees)}, deepest {v2_depth}, nodes {v2_nodes}")
    print(f"lightgbm trees {lgb_trees}, deepest {lgb_max_depth}, nodes {lgb_nodes}")
    print(f"wrote {args.out / 'model.bst'} and {args.out / 'model-settings.json'}")
    if lgb_trees != len(trees):
        sys.exit(f"lightgbm grew {lgb_trees} trees, v2 has {len(trees)}")


if __name__ == "__main__":
    main()
