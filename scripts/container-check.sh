#!/usr/bin/env bash
# Builds the image, brings up docker-compose.yml on a temporary bucket, waits for
# both health checks, trains and batch-predicts through crctl inside the
# containers, checks the output, prints a summary, and tears everything down.
# Too slow for every CI run (the image build compiles the workspace in release).
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/container-check.sh [--engine docker|podman] [--no-build] [--model-ver V] [--s3]
                                  [--timeout SECS] [-h]

  --engine E     docker or podman (default: docker if its daemon answers, else podman)
  --no-build     use the existing crs:latest image instead of building it
  --model-ver V  model version to train and batch-predict (default: v1)
  --s3           also start the compose profile "s3" (a moto S3 server) and run the
                 services on s3://crs-check/run instead of the mounted folder
  --timeout S    how long each step (compose up, health, training, batch) may take (default: 300)
  -h, --help     this help

Needs Docker with compose (the "docker compose" plugin or docker-compose), or podman
with podman-compose, and the images rust:1.95-slim-bookworm and debian:bookworm-slim
(with --s3 also motoserver/moto:5.2.1) pullable or present. The repository's bucket/
is not touched: the containers get a temporary copy of bucket/config. A project name
and host ports of its own, so it can run next to another compose project.
USAGE
}

ENGINE=""
BUILD=1
MODEL_VER=v1
S3=0
TIMEOUT=300
while [[ $# -gt 0 ]]; do
    case "$1" in
        --engine) ENGINE="${2:-}"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --model-ver) MODEL_VER="${2:-}"; shift 2 ;;
        --s3) S3=1; shift ;;
        --timeout) TIMEOUT="${2:-}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done

die() { printf '\nerror: %s\n' "$*" >&2; exit 1; }
step() { printf '\n==> %s\n' "$*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

cd "$(dirname "$0")/.."

# A docker CLI without a daemon is common (podman's docker shim, a remote context
# that is down): only an answering daemon counts.
if [[ -z $ENGINE ]]; then
    if command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; then
        ENGINE=docker
    elif command -v podman >/dev/null; then
        ENGINE=podman
    else
        die "neither a running Docker daemon nor podman found"
    fi
fi
case "$ENGINE" in
    docker)
        if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose)
        elif command -v docker-compose >/dev/null; then COMPOSE=(docker-compose)
        else die "docker found, but neither 'docker compose' nor docker-compose"; fi ;;
    podman)
        command -v podman-compose >/dev/null || die "podman found, but not podman-compose (pip install podman-compose)"
        COMPOSE=(podman-compose) ;;
    *) die "--engine must be docker or podman, not '$ENGINE'" ;;
esac

IMAGE=crs:latest
PROJECT="crscheck$$"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/crs-container-check.XXXXXX")
LOGS="$WORK/logs"
mkdir -p "$LOGS" "$WORK/bucket"
cp -R bucket/config "$WORK/bucket/config"
# The services run as uid 10001 and write into the mounted folder.
chmod -R a+rwX "$WORK/bucket"

free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 20000))
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
    done
}
export BUCKET_DIR="$WORK/bucket" TRAIN_PORT SERVE_PORT S3_PORT MODEL_VER
TRAIN_PORT=$(free_port)
SERVE_PORT=$(free_port)
S3_PORT=$(free_port)
# The shell's own settings must not leak into the check.
unset BUCKET_URL MODEL_RUN WEBHOOK_URL AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN \
    AWS_DEFAULT_REGION AWS_ENDPOINT AWS_ALLOW_HTTP
PROFILE_ARGS=()
if [[ $S3 == 1 ]]; then
    PROFILE_ARGS=(--profile s3)
    export BUCKET_URL=s3://crs-check/run AWS_ENDPOINT=http://s3:5000 AWS_ALLOW_HTTP=true \
        AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
fi
# Every engine call has a deadline: podman-compose's `up` waits forever for a container that
# exits at start (a bad setting), and a hung RPC must not hang the check.
compose() { timeout "$TIMEOUT" "${COMPOSE[@]}" -p "$PROJECT" -f docker-compose.yml "${PROFILE_ARGS[@]}" "$@"; }
# Python with boto3 in the s3 container (moto's image has both), as a client of that server.
s3_python() {
    timeout "$TIMEOUT" "$ENGINE" exec "$(container_of s3)" python3 -c "import boto3, sys
s3 = boto3.client('s3', endpoint_url='http://127.0.0.1:5000', region_name='us-east-1',
                  aws_access_key_id='testing', aws_secret_access_key='testing')
$1"
}

teardown() {
    local code=$?
    trap - EXIT INT TERM
    if [[ $code != 0 ]]; then
        echo "--- container logs (last lines) ---" >&2
        compose logs --tail 40 >&2 2>&1 || true
    fi
    step "tearing down project $PROJECT"
    compose down -v >"$LOGS/down.txt" 2>&1 || echo "warning: compose down failed; see $LOGS/down.txt" >&2
    # Files the containers wrote belong to uid 10001: remove them as root inside a container
    # when this user cannot.
    rm -rf "$WORK" 2>/dev/null \
        || "$ENGINE" run --rm --user 0 -v "$WORK:/w" "$IMAGE" rm -rf /w/bucket >/dev/null 2>&1 \
        || true
    rm -rf "$WORK" 2>/dev/null || echo "warning: could not remove $WORK" >&2
    exit "$code"
}
trap teardown EXIT
trap 'exit 130' INT TERM

container_of() {
    local id
    id=$("$ENGINE" ps -q --filter "label=com.docker.compose.project=$PROJECT" \
        --filter "label=com.docker.compose.service=$1")
    [[ -n $id ]] || die "no running container for service $1 (compose ps: $(compose ps 2>&1 | tail -n 5))"
    echo "${id%%$'\n'*}"
}
# crctl inside a service's container, where the service listens on loopback.
crctl_in() {
    local service=$1
    shift
    timeout "$TIMEOUT" "$ENGINE" exec "$(container_of "$service")" crctl --train-addr 127.0.0.1:50051 --serve-addr 127.0.0.1:50052 "$@"
}
# Health checks do not run by themselves under every engine (podman without systemd):
# poll the same command the compose file's health check runs.
wait_healthy() {
    local service=$1 started
    started=$(now)
    while ! crctl_in "$service" health --service "$service" >"$LOGS/health-$service.txt" 2>&1; do
        if awk -v s="$(since "$started")" -v t="$TIMEOUT" 'BEGIN { exit !(s > t) }'; then
            die "$service not healthy within ${TIMEOUT} s: $(cat "$LOGS/health-$service.txt")"
        fi
        sleep 1
    done
}

printf 'engine: %s (%s), project %s, ports %s/%s, bucket %s\n' \
    "$ENGINE" "${COMPOSE[*]}" "$PROJECT" "$TRAIN_PORT" "$SERVE_PORT" "${BUCKET_URL:-a temporary folder}"

BUILD_SECS="skipped (--no-build)"
if [[ $BUILD == 1 ]]; then
    step "building $IMAGE (compiles the workspace in release: minutes)"
    t=$(now)
    "$ENGINE" build -t "$IMAGE" . >"$LOGS/build.txt" 2>&1 || { tail -n 30 "$LOGS/build.txt" >&2; die "image build failed"; }
    BUILD_SECS="$(since "$t") s"
    echo "built in $BUILD_SECS"
fi
"$ENGINE" image inspect "$IMAGE" >/dev/null 2>&1 || die "no image $IMAGE: run without --no-build"
IMAGE_BYTES=$("$ENGINE" image inspect --format '{{.Size}}' "$IMAGE")
IMAGE_MB=$(awk -v b="$IMAGE_BYTES" 'BEGIN { printf "%.1f", b / 1e6 }')

step "starting the compose project"
t=$(now)
compose up -d >"$LOGS/up.txt" 2>&1 || { tail -n 30 "$LOGS/up.txt" >&2; die "compose up failed"; }
if [[ $S3 == 1 ]]; then
    # The bucket must exist before a service writes to it; moto starts with none.
    s3_python "s3.create_bucket(Bucket='crs-check')" || die "could not create the S3 bucket"
fi
wait_healthy train
TRAIN_HEALTHY=$(since "$t")
echo "train healthy after $TRAIN_HEALTHY s"

step "the pipeline: data, then training $MODEL_VER"
crctl_in train gen-data --if-missing | tee "$LOGS/gen-data.txt"
t=$(now)
crctl_in train train --model-ver "$MODEL_VER" --train data/train/train.csv.gz --eval data/train/eval.csv.gz \
    --wait --label pipeline=container-check | tee "$LOGS/train.txt" || die "training failed"
TRAIN_SECS=$(since "$t")
RUN_ID=$(sed -n 's/^job .* succeeded: model .* run \([^ ]*\)$/\1/p' "$LOGS/train.txt")
[[ -n $RUN_ID ]] || die "could not read the run id from the training output"

# serve reports NOT_SERVING until a run exists; it finds the new run by polling the bucket.
t=$(now)
wait_healthy serve
SERVE_HEALTHY=$(since "$t")
echo "serve healthy $SERVE_HEALTHY s after the run was written"

step "batch-predicting with $MODEL_VER run $RUN_ID"
crctl_in serve load-model --model-ver "$MODEL_VER" --run "$RUN_ID"
crctl_in serve predict-batch --model-ver "$MODEL_VER" --input data/predict/input/prediction_input.csv.gz \
    | tee "$LOGS/predict.txt" || die "batch prediction failed"
OUTPUT_KEY=$(sed -n 's/^wrote \([^ ]*\) .*/\1/p' "$LOGS/predict.txt")
[[ -n $OUTPUT_KEY ]] || die "could not read the output key from the batch output"

# Read the output where the service wrote it: the mounted folder, or S3 through the s3 container.
if [[ $S3 == 1 ]]; then
    s3_python "sys.stdout.buffer.write(s3.get_object(Bucket='crs-check', Key='run/$OUTPUT_KEY')['Body'].read())" \
        >"$WORK/output.csv.gz" || die "could not read s3://crs-check/run/$OUTPUT_KEY"
else
    cp "$WORK/bucket/$OUTPUT_KEY" "$WORK/output.csv.gz" || die "no output file at $OUTPUT_KEY"
fi
gzip -dc "$WORK/output.csv.gz" >"$WORK/output.csv"
HEADER=$(head -n 1 "$WORK/output.csv")
ROWS=$(($(wc -l <"$WORK/output.csv") - 1))
[[ $HEADER == "entity_id,device,cr" ]] || die "output header is '$HEADER', not 'entity_id,device,cr'"
[[ $ROWS -gt 0 ]] || die "the output has no rows"

step "summary"
cat <<SUMMARY
engine          $ENGINE (${COMPOSE[*]})
image           $IMAGE, $IMAGE_MB MB
build           $BUILD_SECS
train healthy   $TRAIN_HEALTHY s after compose up
train           $MODEL_VER run $RUN_ID in $TRAIN_SECS s
serve healthy   $SERVE_HEALTHY s after the run was written
batch           $OUTPUT_KEY: header $HEADER, $ROWS rows
bucket          ${BUCKET_URL:-mounted temporary folder}
result          OK
SUMMARY
