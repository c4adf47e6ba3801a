"""A Python client of both services, from stubs generated out of proto/.

It proves the wire contract works outside Rust: it starts a training job on
train-service and waits for it, then asks serve-service for online predictions
of the first rows of a prediction-input CSV.

    pip install grpcio grpcio-tools
    python3 examples/python/client.py --train-addr 127.0.0.1:50051 \
        --serve-addr 127.0.0.1:50052 --input bucket/data/predict/input/prediction_input.csv.gz

It reads the variables crctl reads: TLS_CA (a PEM CA; set, it connects with TLS) and
AUTH_TOKEN or AUTH_TOKEN_FILE (the bearer token the services require to train).
"""

import argparse
import csv
import gzip
import importlib
import os
import pathlib
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc

PROTO_ROOT = pathlib.Path(__file__).resolve().parents[2] / "proto"
PROTOS = ["crs/train/v1/train.proto", "crs/serve/v1/serve.proto"]


def generate_stubs(out_dir):
    """Compiles the .proto files into importable modules under out_dir."""
    well_known = pathlib.Path(protoc.__file__).parent / "_proto"
    for proto in PROTOS:
        code = protoc.main(
            ["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", proto]
        )
        if code != 0:
            sys.exit(f"protoc failed on {proto}")
    sys.path.insert(0, str(out_dir))
    train_pb2 = importlib.import_module("crs.train.v1.train_pb2")
    train_grpc = importlib.import_module("crs.train.v1.train_pb2_grpc")
    serve_pb2 = importlib.import_module("crs.serve.v1.serve_pb2")
    serve_grpc = importlib.import_module("crs.serve.v1.serve_pb2_grpc")
    return train_pb2, train_grpc, serve_pb2, serve_grpc


def open_channel(addr):
    """A channel to addr: TLS trusting TLS_CA when it is set, plaintext otherwise."""
    ca = os.environ.get("TLS_CA")
    if not ca:
        return grpc.insecure_channel(addr)
    with open(ca, "rb") as f:
        return grpc.secure_channel(addr, grpc.ssl_channel_credentials(root_certificates=f.read()))


def call_metadata():
    """The bearer token from AUTH_TOKEN or AUTH_TOKEN_FILE, as gRPC metadata; never printed."""
    token, path = os.environ.get("AUTH_TOKEN"), os.environ.get("AUTH_TOKEN_FILE")
    if token and path:
        sys.exit("AUTH_TOKEN and AUTH_TOKEN_FILE are both set; set one")
    if path:
        with open(path) as f:
            token = f.read().rstrip("\r\n")
    return (("authorization", f"Bearer {token}"),) if token else ()


def read_rows(path, limit):
    opener = gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open
    with opener(path, "rt", newline="") as f:
        reader = csv.DictReader(f)
        names = [c for c in reader.fieldnames if c.startswith("att")]
        rows = [row for _, row in zip(range(limit), reader)]
    return names, rows


def train(stubs, addr, model_ver, eval_key):
    train_pb2, train_grpc = stubs
    with open_channel(addr) as channel:
        client = train_grpc.TrainServiceStub(channel)
        request = train_pb2.StartTrainingRequest(model_ver=model_ver, labels={"client": "python"})
        if eval_key:
            request.eval_key = eval_key
        job = client.StartTraining(request, metadata=call_metadata())
        print(f"started job {job.job_id} ({train_pb2.JobState.Name(job.state)})")
        deadline = time.monotonic() + 300
        while job.state not in (train_pb2.JOB_STATE_SUCCEEDED, train_pb2.JOB_STATE_FAILED):
            if time.monotonic() > deadline:
                sys.exit(f"job {job.job_id} did not finish in time")
            time.sleep(0.2)
            job = client.GetTrainingJob(train_pb2.GetTrainingJobRequest(job_id=job.job_id))
        if job.state == train_pb2.JOB_STATE_FAILED:
            sys.exit(f"job {job.job_id} failed: {job.error}")
        print(f"job {job.job_id} succeeded: run {job.run_id}, eval wmae {job.evaluation.model.wmae:.5f} "
              f"(device baseline {job.evaluation.device.wmae:.5f})")
        return job.run_id


def predict(stubs, addr, names, rows):
    serve_pb2, serve_grpc = stubs
    with open_channel(addr) as channel:
        client = serve_grpc.ServeServiceStub(channel)
        request = serve_pb2.PredictRequest(
            attribute_names=names,
            rows=[
                serve_pb2.Row(entity_id=int(r["entity_id"]), device=r["device"], attribute_values=[int(r[n]) for n in names])
                for r in rows
            ],
        )
        response = client.Predict(request)
        for row, cr in zip(rows, response.cr):
            if not 0.0 <= cr <= 1.0:
                sys.exit(f"cr {cr} out of [0, 1]")
            print(f"{row['entity_id']},{row['device']},{cr:.6f}")
        print(f"{len(response.cr)} rows predicted by model {response.model_ver} run {response.run_id}")
        return response


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-addr", default="127.0.0.1:50051")
    parser.add_argument("--serve-addr", default="127.0.0.1:50052")
    parser.add_argument("--model-ver", default="v1")
    parser.add_argument("--eval-key", default="data/train/eval.csv.gz")
    parser.add_argument("--input", required=True, help="local prediction-input CSV or gzip CSV")
    parser.add_argument("--rows", type=int, default=5)
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as out_dir:
        train_pb2, train_grpc, serve_pb2, serve_grpc = generate_stubs(out_dir)
        if not args.skip_training:
            train((train_pb2, train_grpc), args.train_addr, args.model_ver, args.eval_key)
        names, rows = read_rows(args.input, args.rows)
        predict((serve_pb2, serve_grpc), args.serve_addr, names, rows)


if __name__ == "__main__":
    main()
