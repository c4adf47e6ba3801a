"""A Python client of the platform's two services, with the helpers a notebook
wants: train, import a model file, list runs, promote, predict (as a
DataFrame) and batch.

    pip install -e examples/python
    from crs_client import Platform
    platform = Platform("127.0.0.1:50051", "127.0.0.1:50052")
    job = platform.import_model("xgb-a", "model.json")
    platform.predict(rows, model_ver="xgb-a")

The generated gRPC stubs ship in `_stubs` (made from proto/ by
`python3 -m crs_client.regenerate` in a checkout). It reads the variables crctl
reads: TLS_CA (a PEM CA; set, it connects with TLS) and AUTH_TOKEN or
AUTH_TOKEN_FILE (the bearer token the services require to change anything).
"""

import os
import pathlib
import sys
import time

import grpc
import pandas as pd

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "_stubs"))

from crs.serve.v1 import serve_pb2, serve_pb2_grpc  # noqa: E402
from crs.train.v1 import train_pb2, train_pb2_grpc  # noqa: E402

__all__ = ["Platform", "PlatformError", "train_pb2", "serve_pb2"]

# Bytes per ImportModel message: under gRPC's 4 MiB default.
CHUNK = 1 << 20
ENDED = {train_pb2.JOB_STATE_SUCCEEDED, train_pb2.JOB_STATE_FAILED, train_pb2.JOB_STATE_CANCELLED}


class PlatformError(RuntimeError):
    """A job that ended without succeeding."""


def _channel(addr):
    ca = os.environ.get("TLS_CA")
    if ca:
        return grpc.secure_channel(addr, grpc.ssl_channel_credentials(pathlib.Path(ca).read_bytes()))
    return grpc.insecure_channel(addr)


def _token():
    token = os.environ.get("AUTH_TOKEN")
    path = os.environ.get("AUTH_TOKEN_FILE")
    if not token and path:
        token = pathlib.Path(path).read_text().strip()
    return [("authorization", f"Bearer {token}")] if token else []


class Platform:
    """Both services, by address."""

    def __init__(self, train_addr="127.0.0.1:50051", serve_addr="127.0.0.1:50052"):
        self.train = train_pb2_grpc.TrainServiceStub(_channel(train_addr))
        self.serve = serve_pb2_grpc.ServeServiceStub(_channel(serve_addr))
        self.metadata = _token()

    def wait(self, job, timeout=600):
        """Follows a job to its end; the ended job, or PlatformError if it did not succeed."""
        deadline = time.monotonic() + timeout
        while job.state not in ENDED:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job.job_id} still {train_pb2.JobState.Name(job.state)}")
            time.sleep(0.2)
            job = self.train.GetTrainingJob(train_pb2.GetTrainingJobRequest(job_id=job.job_id))
        if job.state != train_pb2.JOB_STATE_SUCCEEDED:
            raise PlatformError(f"job {job.job_id} {train_pb2.JobState.Name(job.state)}: {job.error}")
        return job

    def train_model(self, model_ver, eval_key=None, draft=False, wait=True, train_key=None):
        """Trains a built-in version (v1, v2, ...) on the pipeline's data, or on `train_key`."""
        request = train_pb2.StartTrainingRequest(model_ver=model_ver, train_key=train_key or "", eval_key=eval_key,
                                                 draft=draft)
        job = self.train.StartTraining(request, metadata=self.metadata)
        return self.wait(job) if wait else job

    def import_model(self, model_ver, path, eval_key=None, draft=False, wait=True):
        """Imports an xgboost (JSON/UBJSON) or lightgbm (text) model file into a
        version declared for imports; gated unless draft."""
        data = pathlib.Path(path).read_bytes()
        header = train_pb2.ImportModelHeader(model_ver=model_ver, eval_key=eval_key, draft=draft)

        def messages():
            yield train_pb2.ImportModelRequest(header=header)
            for start in range(0, len(data), CHUNK):
                yield train_pb2.ImportModelRequest(chunk=data[start:start + CHUNK])

        job = self.train.ImportModel(messages(), metadata=self.metadata)
        return self.wait(job) if wait else job

    def runs(self, model_ver):
        """A version's runs as a DataFrame, with its aliases in `production` and `latest`."""
        version = self.train.ListModels(train_pb2.ListModelsRequest(model_ver=model_ver)).versions[0]
        frame = pd.DataFrame(
            [{"run_id": r.run_id, "stage": r.stage, "eval_wmae": r.eval.model.wmae,
              "eval_logloss": r.eval.model.logloss, "device_baseline_logloss": r.eval.device.logloss,
              "job_id": r.job_id, "stage_reason": r.stage_reason} for r in version.runs],
            columns=["run_id", "stage", "eval_wmae", "eval_logloss", "device_baseline_logloss", "job_id",
                     "stage_reason"])
        frame["production"] = frame["run_id"] == version.production_run_id
        frame["latest"] = frame["run_id"] == version.latest_run_id
        return frame

    def promote(self, model_ver, run_id, reason="promoted from Python"):
        request = train_pb2.PromoteRequest(model_ver=model_ver, run_id=run_id, reason=reason)
        return self.train.Promote(request, metadata=self.metadata)

    def rollback(self, model_ver, reason="rolled back from Python"):
        return self.train.Rollback(train_pb2.RollbackRequest(model_ver=model_ver, reason=reason), metadata=self.metadata)

    def load(self, model_ver, run="production"):
        """Makes serve-service serve a version: its production run (following it), latest, or a run id."""
        return self.serve.LoadModel(serve_pb2.LoadModelRequest(model_ver=model_ver, run=run), metadata=self.metadata)

    def predict(self, rows, model_ver="", batch_rows=5000):
        """Online predictions of a DataFrame in the prediction-input schema
        (entity_id, device, att<k>): the rows' entity_id and device with `cr`."""
        attributes = [c for c in rows.columns if c.startswith("att")]
        out = []
        for start in range(0, len(rows), batch_rows):
            piece = rows.iloc[start:start + batch_rows]
            request = serve_pb2.PredictRequest(attribute_names=attributes, model_ver=model_ver)
            for entity, device, values in zip(piece["entity_id"], piece["device"],
                                              piece[attributes].to_numpy(dtype=int).tolist()):
                request.rows.add(entity_id=int(entity), device=str(device), attribute_values=values)
            out.extend(self.serve.Predict(request).cr)
        return pd.DataFrame({"entity_id": rows["entity_id"].to_numpy(), "device": rows["device"].to_numpy(),
                             "cr": out})

    def batch(self, input_key, model_ver="", output_key=None, overwrite=False):
        """Batch-predicts a file in the bucket; the response names the output key."""
        request = serve_pb2.PredictBatchRequest(input_key=input_key, model_ver=model_ver, output_key=output_key,
                                                overwrite=overwrite)
        return self.serve.PredictBatch(request, metadata=self.metadata)
