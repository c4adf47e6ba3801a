#!/usr/bin/env bash
# Builds the services and runs the main job: train MODEL_VER on the bucket's
# training data, then batch-predict the prediction input with that run.
# Settings come from .env_pipelines.sh (override any of them from the environment).
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: ./build_pipeline.sh [--service train|serve|both] [--build-only] [--force] [-h]

  --service S   train: build and train only; serve: batch-predict with the LATEST
                run of MODEL_VER; both (default): train, then predict with that run
  --build-only  build the release binaries and stop
  --force       rebuild the project's crates even if they look up to date
  -h, --help    this help

Settings (see .env_pipelines.sh): MODEL_VER, BUCKET_URL, TRAIN_KEY, EVAL_KEY,
PREDICT_INPUT_KEY, CONFIG_KEY, WEBHOOK_URL, TRAIN_ADDR, SERVE_ADDR; when set,
AUTH_TOKEN or AUTH_TOKEN_FILE, TLS_CERT, TLS_KEY and TLS_CA go to the services
and crctl as they are (with TLS_CA, crctl uses https).
Services already listening at TRAIN_ADDR / SERVE_ADDR are used as they are;
otherwise the pipeline starts them and stops them when it ends.
USAGE
}

SERVICE=both
BUILD_ONLY=0
FORCE=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --service) SERVICE="${2:-}"; shift 2 ;;
        --service=*) SERVICE="${1#*=}"; shift ;;
        --build-only) BUILD_ONLY=1; shift ;;
        --force) FORCE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$SERVICE" in train|serve|both) ;; *) echo "error: --service must be train, serve or both, not '$SERVICE'" >&2; exit 2 ;; esac

cd "$(dirname "$0")"
source ./.env_pipelines.sh
BIN=target/release
LOGS=.pipeline
STARTED=()

step() { printf '\n==> %s\n' "$*"; }
die() { printf '\nerror: %s\n' "$*" >&2; exit 1; }
cleanup() {
    for pid in "${STARTED[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

command -v cargo >/dev/null || die "cargo not found: install Rust from https://rustup.rs"

step "building release binaries (the first build takes about 10 minutes on 2 cores)"
if [[ $FORCE == 1 ]]; then
    cargo clean --release -p crs-domain -p crs-platform -p crs-server -p crs-proto -p train-service -p serve-service -p crctl
fi
cargo build --release --locked -p train-service -p serve-service -p crctl || die "the build failed"
[[ $BUILD_ONLY == 1 ]] && { echo "built $BIN/train-service, $BIN/serve-service and $BIN/crctl"; exit 0; }

CRCTL=("$BIN/crctl" --train-addr "$TRAIN_ADDR" --serve-addr "$SERVE_ADDR")
KNOWN=$("$BIN/crctl" versions | cut -f1 | paste -sd, -)
"$BIN/crctl" versions | cut -f1 | grep -qx -- "$MODEL_VER" \
    || die "unknown MODEL_VER '$MODEL_VER' (known: ${KNOWN//,/, })"

step "checking the bucket $BUCKET_URL"
"$BIN/crctl" gen-data --bucket "$BUCKET_URL" --if-missing || die "cannot write the default data into $BUCKET_URL"

# Uses a service already answering at its address, or starts one and waits for it.
ensure_running() {
    local name=$1 addr=$2 wait_for_serving=$3
    if "${CRCTL[@]}" health --service "${name%-service}" >/dev/null 2>&1; then
        echo "$name already serving at $addr; using it"
        return
    fi
    mkdir -p "$LOGS"
    echo "starting $name at $addr (log: $LOGS/$name.log)"
    "$BIN/$name" >"$LOGS/$name.log" 2>&1 &
    STARTED+=($!)
    for _ in $(seq 1 150); do
        kill -0 "${STARTED[-1]}" 2>/dev/null || die "$name exited at start; see $LOGS/$name.log"
        if "${CRCTL[@]}" health --service "${name%-service}" >/dev/null 2>&1; then return; fi
        if [[ $wait_for_serving == 0 ]] && grep -q "listening" "$LOGS/$name.log"; then return; fi
        sleep 0.2
    done
    die "$name did not become ready within 30 s; see $LOGS/$name.log"
}

RUN_ID=latest
if [[ $SERVICE != serve ]]; then
    ensure_running train-service "$TRAIN_ADDR" 1
    step "training $MODEL_VER on $TRAIN_KEY (evaluated on $EVAL_KEY)"
    TRAIN_ARGS=(train --model-ver "$MODEL_VER" --train "$TRAIN_KEY" --eval "$EVAL_KEY" --wait)
    [[ -n $CONFIG_KEY ]] && TRAIN_ARGS+=(--config "$CONFIG_KEY")
    "${CRCTL[@]}" "${TRAIN_ARGS[@]}" --label "pipeline=build_pipeline.sh" | tee "$LOGS/train.txt" || die "training failed"
    RUN_ID=$(sed -n 's/^job .* succeeded: model .* run \([^ ]*\)$/\1/p' "$LOGS/train.txt")
    [[ -n $RUN_ID ]] || die "could not read the run id from the training output"
fi

if [[ $SERVICE != train ]]; then
    # serve-service reports SERVING once it has a model; a fresh one needs the run trained above.
    ensure_running serve-service "$SERVE_ADDR" 0
    step "loading $MODEL_VER run $RUN_ID into serve-service"
    "${CRCTL[@]}" load-model --model-ver "$MODEL_VER" --run "$RUN_ID" || die "serve-service could not load $MODEL_VER run $RUN_ID"
    step "batch-predicting $PREDICT_INPUT_KEY"
    "${CRCTL[@]}" predict-batch --input "$PREDICT_INPUT_KEY" | tee "$LOGS/predict.txt" || die "batch prediction failed"
    OUTPUT_KEY=$(sed -n 's/^wrote \([^ ]*\) .*/\1/p' "$LOGS/predict.txt")
    case "$BUCKET_URL" in
        s3://*) echo "output: $BUCKET_URL/$OUTPUT_KEY" ;;
        *)
            OUTPUT_FILE="${BUCKET_URL#file://}/$OUTPUT_KEY"
            echo "output: $OUTPUT_FILE"
            echo "first lines:"
            # head closes the pipe early; that is not a failure of gzip.
            { gzip -dc "$OUTPUT_FILE" || true; } | head -n 6
            ;;
    esac
fi

step "done"
