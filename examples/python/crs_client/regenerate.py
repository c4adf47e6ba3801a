"""Regenerates the shipped stubs from proto/ of this checkout (needs grpcio-tools):

    cd examples/python && python3 -m crs_client.regenerate
"""

import pathlib
import sys

from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parents[2] / "proto"

if __name__ == "__main__":
    well_known = pathlib.Path(protoc.__file__).parent / "_proto"
    for proto in ["crs/train/v1/train.proto", "crs/serve/v1/serve.proto"]:
        args = ["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", f"--python_out={HERE / '_stubs'}",
                f"--grpc_python_out={HERE / '_stubs'}", proto]
        if protoc.main(args) != 0:
            sys.exit(f"protoc failed on {proto}")
