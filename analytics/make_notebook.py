"""Writes analytics.ipynb from the cells below (committed without outputs):

    python3 analytics/make_notebook.py
"""

import pathlib

import nbformat

CELLS = [
    ("md", """# Conversion rates: the data, the platform's models, and models brought from Python

This notebook works against a running stack (train-service, serve-service and their bucket):

1. EDA of the bucket's data: conversion rate by device, attribute prevalence and lift, the weekly shift.
2. v1 and v2 trained through train-service, read back from their runs.
3. xgboost and lightgbm fitted here with keyword-grouped cross-validation on the same split,
   saved, **imported** into versions declared for imports, gated, served, and predicted through
   serve-service next to their local predictions.

Settings (environment): `CRS_TRAIN_ADDR`, `CRS_SERVE_ADDR` (default the services' defaults),
`CRS_BUCKET` (the bucket's folder, default `../bucket`), `CRS_SAMPLE_KEYWORDS` (unset: models are
trained on every training row; a number: on that many keywords of the training file, sampled,
so that the notebook stays quick where the services run as debug builds, as in CI, which runs it
on the real keyword data in under 3 minutes). The EDA always reads every row. Requirements:
`analytics/requirements.txt` and the client, `pip install -e examples/python`."""),
    ("code", """%matplotlib inline
import json, os, pathlib, sys, tempfile
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xgboost as xgb
import lightgbm as lgb
from sklearn.model_selection import GroupKFold

from crs_client import Platform

TRAIN_ADDR = os.environ.get("CRS_TRAIN_ADDR", "127.0.0.1:50051")
SERVE_ADDR = os.environ.get("CRS_SERVE_ADDR", "127.0.0.1:50052")
BUCKET = pathlib.Path(os.environ.get("CRS_BUCKET", "../bucket"))
SAMPLE_KEYWORDS = int(os.environ.get("CRS_SAMPLE_KEYWORDS") or 0)
EVAL_KEY = "data/train/eval.csv.gz"
platform = Platform(TRAIN_ADDR, SERVE_ADDR)
DEVICES = ["Computer", "Smartphone", "Tablet"]"""),
    ("md", "## The data"),
    ("code", """train = pd.read_csv(BUCKET / "data/train/train.csv.gz")
evaluation = pd.read_csv(BUCKET / EVAL_KEY)
train = train[train["Clicks"] > 0]
evaluation = evaluation[evaluation["Clicks"] > 0]
attributes = [c for c in train.columns if c.startswith("att")]
print(f"{len(train)} training rows, {train['entity_id'].nunique()} keywords, {len(attributes)} attributes; "
      f"{len(evaluation)} evaluation rows")
def rate(frame):
    return frame["Conversions"].clip(upper=frame["Clicks"]).sum() / frame["Clicks"].sum()
by_device = train.groupby("device").apply(rate, include_groups=False)
by_device.plot.bar(title="conversion rate by device"); plt.show()
by_device"""),
    ("code", """prevalence = train[attributes].mean()
lift = pd.Series({a: rate(train[train[a] == 1]) / rate(train) if train[a].any() else np.nan for a in attributes})
table = pd.DataFrame({"prevalence": prevalence, "lift": lift}).sort_values("lift", ascending=False)
table.plot.scatter(x="prevalence", y="lift", logx=True, title="attribute prevalence and lift"); plt.show()
table.head(10)"""),
    ("code", """if "week" in train.columns and train["week"].nunique() > 1:
    weekly = train.groupby(["week", "device"]).apply(rate, include_groups=False).unstack()
    weekly.plot(marker="o", title="the weekly shift: conversion rate by week and device"); plt.show()
    print(weekly)
else:
    print("one week of data: no weekly shift to show")"""),
    ("md", """## The training rows

Every model below, the platform's and the libraries', is fitted on the same rows and judged on the
same evaluation file, whose keywords are not in the training file. With `CRS_SAMPLE_KEYWORDS` set,
those rows are a sample of the training file's keywords (all rows of each sampled keyword), written
to the bucket for train-service to read."""),
    ("code", """TRAIN_KEY = "data/train/train.csv.gz"
fit_rows = train
if SAMPLE_KEYWORDS and train["entity_id"].nunique() > SAMPLE_KEYWORDS:
    keywords = train["entity_id"].drop_duplicates().sample(SAMPLE_KEYWORDS, random_state=1)
    fit_rows = train[train["entity_id"].isin(keywords)]
    TRAIN_KEY = "data/train/notebook_sample.csv.gz"
    fit_rows.to_csv(BUCKET / TRAIN_KEY, index=False)
    print(f"a sample: {SAMPLE_KEYWORDS} of {train['entity_id'].nunique()} keywords, "
          f"{len(fit_rows)} of {len(train)} training rows, in {TRAIN_KEY}")
assert not set(fit_rows["entity_id"]) & set(evaluation["entity_id"]), "evaluation keywords in training"
print(f"fitting on {len(fit_rows)} rows, evaluating on {len(evaluation)} rows")"""),
    ("md", "## The platform's own models, trained through train-service, read back from their runs"),
    ("code", """platform_runs = {}
for version in ["v1", "v2"]:
    job = platform.train_model(version, train_key=TRAIN_KEY, eval_key=EVAL_KEY)
    platform_runs[version] = job
    print(version, job.run_id, "eval log-loss", round(job.evaluation.model.logloss, 5),
          "device baseline", round(job.evaluation.device.logloss, 5))
    print(platform.runs(version)[["run_id", "stage", "eval_logloss", "stage_reason"]].to_string(index=False))

def run_metadata(version, run_id):
    return json.loads((BUCKET / "model" / version / run_id / "metadata.json").read_text())

read_back = {}
for version, job in platform_runs.items():
    metadata = run_metadata(version, job.run_id)
    metrics = metadata["metrics"]["eval"]
    read_back[version] = {"train key": metadata["train_data"]["key"],
                          "observations": metadata["train_data"]["rows"]["observations"],
                          "eval rows": metrics["rows"], **{f"{name} log-loss": metrics[name]["logloss"]
                                                           for name in ["model", "device", "global"]},
                          "hyperparameters": metadata["hyperparameters"]}
read_back = pd.DataFrame(read_back).T
read_back[["model log-loss", "device log-loss", "global log-loss"]].astype(float).plot.bar(
    title="v1 and v2 from their runs: evaluation log-loss against the baselines", ylim=(
        0.9 * read_back["model log-loss"].astype(float).min(), None)); plt.show()
read_back"""),
    ("md", """## xgboost and lightgbm, fitted here

Keyword-grouped cross-validation on the training rows (a keyword's rows stay in one fold), a small
grid, then a refit on all training rows. The features use the data contract's names (`att<k>`,
`device` as the code 0/1/2, `device=<name>` one-hot), which is how the platform maps them."""),
    ("code", """def matrix(frame, columns):
    out = {}
    for name in columns:
        if name == "device":
            out[name] = frame["device"].map(DEVICES.index).astype(float)
        elif name.startswith("device="):
            out[name] = (frame["device"] == name.split("=")[1]).astype(float)
        else:
            out[name] = frame[name].astype(float)
    return pd.DataFrame(out, columns=columns)

columns = ["device"] + attributes
X, groups = matrix(fit_rows, columns), fit_rows["entity_id"].to_numpy()
y = (fit_rows["Conversions"].clip(upper=fit_rows["Clicks"]) / fit_rows["Clicks"]).to_numpy()
w = fit_rows["Clicks"].to_numpy()

def weighted_logloss(p, y, w):
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return -np.sum(w * (y * np.log(p) + (1 - y) * np.log(1 - p))) / np.sum(w)

def cross_validate(fit_predict, grid, folds=3):
    scores = []
    for params in grid:
        losses = []
        for fit_rows, test_rows in GroupKFold(n_splits=folds).split(X, y, groups):
            p = fit_predict(params, X.iloc[fit_rows], y[fit_rows], w[fit_rows], X.iloc[test_rows])
            losses.append(weighted_logloss(p, y[test_rows], w[test_rows]))
        scores.append((np.mean(losses), params))
    return sorted(scores, key=lambda s: s[0])

def booster_params(params):
    return {k: v for k, v in params.items() if k != "rounds"}

def xgb_fit(params, X, y, w):
    return xgb.train({"objective": "binary:logistic", "nthread": 2, "seed": 1, **booster_params(params)},
                     xgb.DMatrix(X, label=y, weight=w), params["rounds"])

def lgb_fit(params, X, y, w):
    return lgb.train({"objective": "cross_entropy", "verbose": -1, "num_threads": 2, "seed": 1,
                      **booster_params(params)}, lgb.Dataset(X, label=y, weight=w), params["rounds"])

xgb_grid = [{"max_depth": d, "eta": 0.1, "rounds": 40} for d in (2, 4)]
lgb_grid = [{"num_leaves": n, "learning_rate": 0.1, "min_data_in_leaf": 10, "rounds": 40} for n in (7, 15)]
xgb_scores = cross_validate(lambda p, X, y, w, T: xgb_fit(p, X, y, w).predict(xgb.DMatrix(T)), xgb_grid)
lgb_scores = cross_validate(lambda p, X, y, w, T: lgb_fit(p, X, y, w).predict(T), lgb_grid)
print("xgboost", xgb_scores[0]); print("lightgbm", lgb_scores[0])
grid_point = lambda params: ", ".join(f"{k}={params[k]}" for k in ("max_depth", "num_leaves") if k in params)
cv = pd.DataFrame([{"grid point": f"{name} {grid_point(params)}", "cv log-loss": loss}
                   for name, scores in [("xgboost", xgb_scores), ("lightgbm", lgb_scores)] for loss, params in scores])
cv.plot.barh(x="grid point", y="cv log-loss", title="keyword-grouped cross-validation, per grid point", legend=False)
plt.xlim(0.995 * cv["cv log-loss"].min(), 1.005 * cv["cv log-loss"].max()); plt.show()
xgb_model, lgb_model = xgb_fit(xgb_scores[0][1], X, y, w), lgb_fit(lgb_scores[0][1], X, y, w)"""),
    ("md", """## Import, gate, serve

Each library gets a version of its own, declared in the bucket by `config/<ver>/model.yaml`.
**The evaluation file must stay out of training**, as it does here: the platform cannot know
what a model was trained on."""),
    ("code", """for version, framework in [("nb-xgb", "xgboost"), ("nb-lgb", "lightgbm")]:
    declaration = BUCKET / "config" / version / "model.yaml"
    declaration.parent.mkdir(parents=True, exist_ok=True)
    declaration.write_text(f"framework: {framework}\\n")
files = pathlib.Path(tempfile.mkdtemp())
xgb_model.save_model(files / "model.json")
lgb_model.save_model(files / "model.txt")
imported = {}
for version, path in [("nb-xgb", files / "model.json"), ("nb-lgb", files / "model.txt")]:
    job = platform.import_model(version, path, eval_key=EVAL_KEY)
    imported[version] = job
    print(version, job.run_id, "eval log-loss", round(job.evaluation.model.logloss, 5))
    # Gated as a trained run: the first production if not worse than the baselines.
    print(platform.runs(version)[["run_id", "stage", "eval_logloss", "stage_reason"]].to_string(index=False))"""),
    ("code", """rows = evaluation[["entity_id", "device"] + attributes].reset_index(drop=True)
local = {
    "nb-xgb": xgb_model.predict(xgb.DMatrix(matrix(rows, columns).to_numpy(), feature_names=columns)),
    "nb-lgb": lgb_model.predict(matrix(rows, columns)),
}
# A batch writes each keyword and device once, from its first row.
first = rows.drop_duplicates(["entity_id", "device"])
comparison = pd.DataFrame({"entity_id": rows["entity_id"], "device": rows["device"]})
for version in ["nb-xgb", "nb-lgb"]:
    # The imported run itself, whatever the gate decided of it.
    platform.load(version, imported[version].run_id)
    served = platform.predict(rows, model_ver=version)["cr"].to_numpy()
    written = platform.batch(EVAL_KEY, model_ver=version, overwrite=True).output_key
    output = pd.read_csv(BUCKET / written)
    batch = first[["entity_id", "device"]].merge(output, on=["entity_id", "device"], how="left")["cr"].to_numpy()
    comparison[f"{version} served"], comparison[f"{version} local"] = served, local[version]
    for how, predicted, want in [("online", served, local[version]), ("batch", batch, local[version][first.index])]:
        largest = np.max(np.abs(predicted - want))
        print(f"{version} {how}: {len(predicted)} rows, largest difference from the local predictions {largest:.2e}")
        assert len(predicted) == len(want) and largest <= 1e-6
figure, axes = plt.subplots(1, 2, figsize=(10, 4))
for axis, version in zip(axes, ["nb-xgb", "nb-lgb"]):
    comparison.plot.scatter(x=f"{version} local", y=f"{version} served", ax=axis, s=4,
                            title=f"{version}: served against local")
plt.show()
comparison.head()"""),
    ("code", """scores = pd.DataFrame({
    name: {"eval log-loss": job.evaluation.model.logloss, "eval wmae": job.evaluation.model.wmae}
    for name, job in {**platform_runs, **imported}.items()
}).T
scores.plot.barh(y="eval log-loss", title="evaluation log-loss (lower is better)", legend=False); plt.show()
scores"""),
]


def main():
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for kind, text in CELLS:
        cell = nbformat.v4.new_markdown_cell(text) if kind == "md" else nbformat.v4.new_code_cell(text)
        notebook.cells.append(cell)
    nbformat.write(notebook, pathlib.Path(__file__).resolve().parent / "analytics.ipynb")


if __name__ == "__main__":
    main()
