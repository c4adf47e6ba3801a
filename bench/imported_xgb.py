#!/usr/bin/env python3
"""Fits the fit bench's imported model (`fit --imported`): xgboost
binary:logistic, 300 trees of depth 6, on the bench's training split, with the
data contract's feature names (the one-hot devices, then the attributes), and
saves it with xgboost's own save_model:

    imported_xgb.py <train.csv> <model.json> <threads>

train.csv is the split the bench writes (entity_id, device, att..., clicks, conversions).
"""

import sys

import numpy as np
import pandas as pd
import xgboost as xgb

DEVICES = ["Computer", "Smartphone", "Tablet"]

if __name__ == "__main__":
    train_path, out, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    train = pd.read_csv(train_path)
    attributes = [c for c in train.columns if c.startswith("att")]
    columns = [f"device={d}" for d in DEVICES] + attributes
    frame = pd.concat([pd.DataFrame({f"device={d}": (train["device"] == d).astype(np.float64) for d in DEVICES}),
                       train[attributes].astype(np.float64)], axis=1)[columns]
    rate = (train["conversions"] / train["clicks"]).to_numpy()
    params = {"objective": "binary:logistic", "max_depth": 6, "eta": 0.05, "nthread": threads, "seed": 1}
    xgb.train(params, xgb.DMatrix(frame, label=rate, weight=train["clicks"].to_numpy()), 300).save_model(out)
