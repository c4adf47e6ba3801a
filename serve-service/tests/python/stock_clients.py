"""Stock Python clients against a running serve-service and train-service.

Triton's tritonclient[grpc], unmodified, speaks the Open Inference Protocol to
serve-service: health, metadata, raw-tensor inference (what
InferInput.set_data_from_numpy sends) equal to the Predict answers the caller
recorded, and the model repository (index, unload, load). grpcio-reflection's
v1alpha client then lists both services' RPCs.

Usage: stock_clients.py --serve-addr HOST:PORT --train-addr HOST:PORT --cases FILE
where FILE is JSON: {"model", "run_id", "attributes", "cases": [{"entity_id",
"device", "attributes", "cr"}]}, each case's attributes being rows of 0/1 in
the model's attribute order and cr the Predict answer for those rows.
"""

import argparse
import json
import sys

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)


def infer(client, model, case):
    n = len(case["entity_id"])
    k = len(case["attributes"][0]) if n else 0
    inputs = [
        grpcclient.InferInput("entity_id", [n], "INT64"),
        grpcclient.InferInput("device", [n], "BYTES"),
        grpcclient.InferInput("attributes", [n, k], "INT8"),
    ]
    inputs[0].set_data_from_numpy(np.array(case["entity_id"], dtype=np.int64))
    inputs[1].set_data_from_numpy(np.array([d.encode() for d in case["device"]], dtype=np.object_))
    inputs[2].set_data_from_numpy(np.array(case["attributes"], dtype=np.int8).reshape(n, k))
    outputs = [grpcclient.InferRequestedOutput("cr")]
    result = client.infer(model, inputs, outputs=outputs, request_id=f"rows-{n}", client_timeout=60)
    cr = result.as_numpy("cr")
    check(cr is not None, f"no 'cr' output in the answer to {n} rows")
    check(cr.dtype == np.float64 and cr.shape == (n,), f"cr is {cr.dtype} {cr.shape}, expected float64 ({n},)")
    check(result.get_response().id == f"rows-{n}", "the request id is not echoed")
    return cr


def tritonclient_checks(addr, spec):
    model, run_id, attributes = spec["model"], spec["run_id"], spec["attributes"]
    client = grpcclient.InferenceServerClient(url=addr)
    check(client.is_server_live(), "server not live")
    check(client.is_server_ready(), "server not ready")
    server = client.get_server_metadata()
    check(server.name == "serve-service", f"server name {server.name!r}")
    check("model_repository" in server.extensions, f"extensions {list(server.extensions)}")
    check(client.is_model_ready(model), f"model {model} not ready")
    check(client.is_model_ready(model, run_id), f"model {model} run {run_id} not ready")
    metadata = client.get_model_metadata(model)
    check(metadata.name == model and list(metadata.versions) == [run_id], f"metadata {metadata}")
    inputs = [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs]
    expected = [("entity_id", "INT64", [-1]), ("device", "BYTES", [-1]), ("attributes", "INT8", [-1, len(attributes)])]
    check(inputs == expected, f"inputs {inputs}, expected {expected}")
    check([(t.name, t.datatype) for t in metadata.outputs] == [("cr", "FP64")], f"outputs {metadata.outputs}")
    print(f"ok: tritonclient health and metadata ({model} run {run_id}, {len(attributes)} attributes)")

    for case in spec["cases"]:
        cr = infer(client, model, case)
        check(cr.tolist() == case["cr"], f"{len(cr)} rows: ModelInfer differs from Predict")
        print(f"ok: tritonclient infer of {len(cr)} rows (raw tensors) equals Predict")

    index = client.get_model_repository_index()
    entries = {(m.name, m.version, m.state) for m in index.models}
    check((model, run_id, "READY") in entries, f"repository index {entries}")
    client.unload_model(model)
    check(not client.is_server_ready(), "server still ready after the unload")
    check(not client.is_model_ready(model), "model still ready after the unload")
    try:
        infer(client, model, spec["cases"][0])
        check(False, "inference answered after the unload")
    except grpcclient.InferenceServerException as e:
        check(e.status() == "StatusCode.NOT_FOUND", f"after the unload: {e.status()} {e.message()}")
    client.load_model(model)
    check(client.is_model_ready(model), "model not ready after the load")
    cr = infer(client, model, spec["cases"][0])
    check(cr.tolist() == spec["cases"][0]["cr"], "after the reload, ModelInfer differs from Predict")
    print("ok: tritonclient repository index, unload and load")


def reflected_methods(addr):
    channel = grpc.insecure_channel(addr)
    database = ProtoReflectionDescriptorDatabase(channel)
    pool = descriptor_pool.DescriptorPool(database)
    methods = {}
    for service in database.get_services():
        methods[service] = sorted(m.name for m in pool.FindServiceByName(service).methods)
    channel.close()
    return methods


def reflection_checks(serve_addr, train_addr):
    serve = reflected_methods(serve_addr)
    for service, rpcs in [
        ("crs.serve.v1.ServeService", ["GetModel", "LoadModel", "Predict", "PredictBatch"]),
        ("inference.GRPCInferenceService", ["ModelInfer", "ModelMetadata", "ModelReady", "RepositoryIndex",
                                            "RepositoryModelLoad", "RepositoryModelUnload", "ServerLive",
                                            "ServerMetadata", "ServerReady"]),
        ("grpc.health.v1.Health", ["Check", "Watch"]),
    ]:
        check(set(rpcs) <= set(serve.get(service, [])), f"serve-service reflection: {service} has {serve.get(service)}")
    train = reflected_methods(train_addr)
    check("StartTraining" in train.get("crs.train.v1.TrainService", []), f"train-service reflection: {train}")
    check("crs.serve.v1.ServeService" not in train, "train-service advertises serve-service's service")
    for name, methods in [("serve-service", serve), ("train-service", train)]:
        listed = "; ".join(f"{s}: {', '.join(m)}" for s, m in sorted(methods.items()))
        print(f"ok: grpcio-reflection (v1alpha) lists {name}: {listed}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve-addr", required=True)
    parser.add_argument("--train-addr", required=True)
    parser.add_argument("--cases", required=True)
    args = parser.parse_args()
    with open(args.cases) as f:
        spec = json.load(f)
    tritonclient_checks(args.serve_addr, spec)
    reflection_checks(args.serve_addr, args.train_addr)
    print("all stock-client checks passed")


if __name__ == "__main__":
    main()
