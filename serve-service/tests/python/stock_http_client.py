"""Triton's tritonclient[http], unmodified, against serve-service's REST API.

Health, server and model metadata, inference with the client's defaults
(binary tensor data both ways), with binary_data=False (JSON tensors both
ways) and with the outputs left to the server, each equal to the Predict
answers the caller recorded, and the model repository (index, unload and load,
refused without the bearer token and done with it).

Usage: stock_http_client.py --url HOST:PORT --token TOKEN --cases FILE
where FILE is JSON: {"model", "run_id", "attributes", "cases": [{"entity_id",
"device", "attributes", "cr"}]}, each case's attributes being rows of 0/1 in
the model's attribute order and cr the Predict answer for those rows.
"""

import argparse
import json
import sys

import numpy as np
import tritonclient.http as httpclient


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)


def infer(client, model, case, binary, name_output=True, headers=None):
    n = len(case["entity_id"])
    k = len(case["attributes"][0]) if n else 0
    inputs = [
        httpclient.InferInput("entity_id", [n], "INT64"),
        httpclient.InferInput("device", [n], "BYTES"),
        httpclient.InferInput("attributes", [n, k], "INT8"),
    ]
    inputs[0].set_data_from_numpy(np.array(case["entity_id"], dtype=np.int64), binary_data=binary)
    inputs[1].set_data_from_numpy(np.array([d.encode() for d in case["device"]], dtype=np.object_), binary_data=binary)
    inputs[2].set_data_from_numpy(np.array(case["attributes"], dtype=np.int8).reshape(n, k), binary_data=binary)
    outputs = [httpclient.InferRequestedOutput("cr", binary_data=binary)] if name_output else None
    result = client.infer(model, inputs, outputs=outputs, request_id=f"rows-{n}", headers=headers)
    cr = result.as_numpy("cr")
    check(cr is not None, f"no 'cr' output in the answer to {n} rows")
    check(cr.dtype == np.float64 and cr.shape == (n,), f"cr is {cr.dtype} {cr.shape}, expected float64 ({n},)")
    check(result.get_response()["id"] == f"rows-{n}", "the request id is not echoed")
    return cr


def refused(call, status, what):
    try:
        call()
    except httpclient.InferenceServerException as e:
        check(e.status() == status, f"{what}: status {e.status()} ({e.message()}), expected {status}")
        return e.message()
    check(False, f"{what} was not refused")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--cases", required=True)
    args = parser.parse_args()
    with open(args.cases) as f:
        spec = json.load(f)
    model, run_id, attributes = spec["model"], spec["run_id"], spec["attributes"]
    client = httpclient.InferenceServerClient(url=args.url, network_timeout=120.0)

    check(client.is_server_live(), "server not live")
    check(client.is_server_ready(), "server not ready")
    server = client.get_server_metadata()
    check(server["name"] == "serve-service", f"server metadata {server}")
    check({"model_repository", "binary_tensor_data"} <= set(server["extensions"]), f"extensions {server}")
    check(client.is_model_ready(model), f"model {model} not ready")
    check(client.is_model_ready(model, run_id), f"model {model} run {run_id} not ready")
    check(not client.is_model_ready(model, "20200101T000000000Z-000000"), "another run is ready")
    metadata = client.get_model_metadata(model)
    check(metadata["name"] == model and metadata["versions"] == [run_id], f"metadata {metadata}")
    inputs = [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]]
    expected = [("entity_id", "INT64", [-1]), ("device", "BYTES", [-1]), ("attributes", "INT8", [-1, len(attributes)])]
    check(inputs == expected, f"inputs {inputs}, expected {expected}")
    check(metadata["inputs"][2]["parameters"]["attributes"] == ",".join(attributes), "the attributes parameter")
    print(f"ok: tritonclient.http health and metadata ({model} run {run_id}, {len(attributes)} attributes)")

    for case in spec["cases"]:
        n = len(case["cr"])
        for binary, name_output, how in [
            (True, True, "its default binary tensor data"),
            (False, True, "binary_data=False (JSON tensors)"),
            (True, False, "binary data and no outputs named"),
        ]:
            cr = infer(client, model, case, binary, name_output)
            check(cr.tolist() == case["cr"], f"{n} rows with {how}: REST differs from Predict")
            print(f"ok: tritonclient.http infer of {n} rows with {how} equals Predict")

    index = client.get_model_repository_index()
    entries = {(m["name"], m.get("version", ""), m["state"]) for m in index}
    check((model, run_id, "READY") in entries, f"repository index {entries}")
    message = refused(lambda: client.unload_model(model), "401", "an unload without the token")
    check("bearer token" in message, f"the refusal says {message!r}")
    wrong = {"Authorization": "Bearer not-the-token"}
    refused(lambda: client.load_model(model, headers=wrong), "401", "a load with a wrong token")
    token = {"Authorization": f"Bearer {args.token}"}
    client.unload_model(model, headers=token)
    check(not client.is_server_ready(), "server still ready after the unload")
    check(not client.is_model_ready(model), "model still ready after the unload")
    message = refused(lambda: infer(client, model, spec["cases"][0], True), "404", "inference after the unload")
    check(f"model '{model}' is not loaded" in message, f"after the unload: {message!r}")
    client.load_model(model, headers=token)
    check(client.is_model_ready(model), "model not ready after the load")
    cr = infer(client, model, spec["cases"][0], True)
    check(cr.tolist() == spec["cases"][0]["cr"], "after the reload, REST differs from Predict")
    print("ok: tritonclient.http repository index, unload and load with the token, refused without")
    print("all tritonclient.http checks passed")


if __name__ == "__main__":
    main()
