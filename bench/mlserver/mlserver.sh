#!/usr/bin/env bash
# The pinned MLServer reference of the online comparison (bench/README.md, "Online comparison").
#
#   bench/mlserver/mlserver.sh install           MLServer 1.7.1 + its lightgbm runtime (requirements.txt)
#                                                into target/mlserver/venv; a no-op when already there
#   bench/mlserver/mlserver.sh fit DIR           install, then fit DIR/model.json's size on DIR/train.csv
#                                                into DIR/model (model.bst, model-settings.json)
#   bench/mlserver/mlserver.sh serve DIR/model   serve it: REST on $MLSERVER_HTTP_PORT (8080), gRPC on
#                                                $MLSERVER_GRPC_PORT (8081), metrics on $MLSERVER_METRICS_PORT (8082)
#
# `target/release/online --compare` runs fit and serve itself; DIR is its --work-dir
# (target/bench-online). PYTHON picks the interpreter the venv is made from (3.11 or 3.12;
# default python3). Run from anywhere: paths are the repository's.
#
# Served with MLServer's defaults except four, each a setting a deployment makes:
# - MLSERVER_HOST 127.0.0.1: loopback only, not 0.0.0.0;
# - MLSERVER_DEBUG false: the default, true, writes an access-log line per request and logs
#   at DEBUG;
# - OMP_NUM_THREADS 1: lightgbm predicts with OpenMP on every core by default, and on small
#   requests its threads fight the server's own (here, on 2 busy cores, a one-row
#   Booster.predict took 7.1 ms with the default and 0.11 ms with one thread; 100 rows
#   4.7 ms and 0.87 ms);
# - MLSERVER_PARALLEL_WORKERS 0: inference in the server process. The default, 1, hands
#   every request to one worker process and back; on 2 cores that doubled MLServer's CPU
#   per request and halved its one-row speed in the same bench (docs/performance-online.md
#   has both runs). Its purpose, keeping a slow model off the event loop, does not apply to
#   a model that predicts in tens of microseconds.
# Each can be overridden from the environment, as can any other MLSERVER_* setting.

set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/target/mlserver/venv"
stamp="$venv/.requirements.sha256"

install() {
    local want
    want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
    if [[ -x "$venv/bin/mlserver" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return
    fi
    local python="${PYTHON:-python3}"
    "$python" -c 'import sys; v = sys.version_info; sys.exit(not ((3, 11) <= v[:2] <= (3, 12)))' || {
        echo "MLServer 1.7.1 with these pins needs Python 3.11 or 3.12; $python is $("$python" --version 2>&1). Set PYTHON." >&2
        exit 1
    }
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$here/requirements.txt"
    "$venv/bin/pip" check
    echo "$want" > "$stamp"
    echo "installed $("$venv/bin/mlserver" --version 2>&1 | tail -1) into $venv"
}

case "${1:-}" in
install)
    install
    ;;
fit)
    dir="${2:?usage: $0 fit DIR (with DIR/model.json and DIR/train.csv)}"
    install
    "$venv/bin/python" "$here/fit_model.py" --artifact "$dir/model.json" --train "$dir/train.csv" --out "$dir/model"
    ;;
serve)
    model="${2:?usage: $0 serve MODEL_DIR (with model.bst and model-settings.json)}"
    [[ -x "$venv/bin/mlserver" ]] || { echo "no MLServer in $venv: run $0 install" >&2; exit 1; }
    export MLSERVER_HOST="${MLSERVER_HOST:-127.0.0.1}" MLSERVER_DEBUG="${MLSERVER_DEBUG:-false}"
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MLSERVER_PARALLEL_WORKERS="${MLSERVER_PARALLEL_WORKERS:-0}"
    # exec: the caller's child is MLServer itself, so its process tree is MLServer's.
    exec "$venv/bin/mlserver" start "$model"
    ;;
*)
    sed -n '2,28p' "$0" >&2
    exit 2
    ;;
esac
