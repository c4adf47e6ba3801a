#!/usr/bin/env bash
# Runs the development overlay (deploy/k8s/overlays/dev) with podman kube play on
# this machine, as far as podman 4.3 goes: the Deployments' pods, the Jobs' pod
# templates as Pods (podman takes no Jobs), reached through their published
# ports. Checks: serve and train become ready, the training Job's pod writes a
# run that the gate promotes, serve-service loads it, a prediction answers, a
# 3-shard batch (three pods, JOB_COMPLETION_INDEX 0..2 as an Indexed Job sets
# it) covers every input file once and writes the summary. Prints a summary and
# removes every pod, volume and secret it made, however it ends.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/k8s-check.sh [--build] [--timeout SECS] [--keep] [-h]

  --build        build crs:latest first (podman build, the workspace in release: minutes)
  --timeout S    how long each wait may take (default: 300)
  --keep         leave the pods, volume and secret for inspection (remove them by hand)
  -h, --help     this help

Needs podman (4.3 or later; catatonit for its pods) and the image crs:latest, as
scripts/container-check.sh builds it. The host ports the manifests name must be
free: 50051, 50052, 8080, 8081, 9090, 9091 (podman publishes each containerPort
on the same host port).
USAGE
}

BUILD=0
KEEP=0
TIMEOUT=300
while [[ $# -gt 0 ]]; do
    case "$1" in
        --build) BUILD=1; shift ;;
        --keep) KEEP=1; shift ;;
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
REPO=$PWD

command -v podman >/dev/null || die "podman not found (Debian: apt-get install podman catatonit)"
IMAGE=crs:latest
if [[ $BUILD == 1 ]]; then
    step "building $IMAGE"
    podman build -t "$IMAGE" . || die "image build failed"
fi
podman image exists "$IMAGE" || die "no image $IMAGE: build it (scripts/container-check.sh, or --build)"

# Renders the overlays and installs kubectl and PyYAML (in target/k8s-venv) if missing.
step "rendering and validating the overlays"
scripts/k8s-validate.sh
KUBECTL=$(command -v kubectl || echo "$REPO/target/tools/kubectl")
PYTHON=$REPO/target/k8s-venv/bin/python

for port in 50051 50052 8080 8081 9090 9091; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "host port $port is in use; the dev overlay's pods publish it"
    fi
done

# Everything this run makes carries its suffix: another run on this machine is left alone.
SUFFIX="k8scheck$$"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/crs-k8s-check.XXXXXX")
LOGS=$WORK/logs
mkdir -p "$LOGS"
PODS=()
SECRET=""
VOLUME=""

teardown() {
    local code=$?
    trap - EXIT INT TERM
    if [[ $code != 0 ]]; then
        for pod in "${PODS[@]}"; do
            echo "--- $pod (last lines) ---" >&2
            podman pod logs --tail 30 "$pod" >&2 2>&1 || true
        done
    fi
    if [[ $KEEP == 1 ]]; then
        echo "kept: pods ${PODS[*]}, volume $VOLUME, secret $SECRET; files in $WORK"
        exit "$code"
    fi
    step "tearing down"
    for pod in "${PODS[@]}"; do podman pod rm -f "$pod" >/dev/null 2>&1 || true; done
    [[ -n $VOLUME ]] && { podman volume rm -f "$VOLUME" >/dev/null 2>&1 || echo "warning: volume $VOLUME left" >&2; }
    [[ -n $SECRET ]] && { podman secret rm "$SECRET" >/dev/null 2>&1 || echo "warning: secret $SECRET left" >&2; }
    rm -rf "$WORK"
    left=$(podman pod ps -q --filter "name=$SUFFIX" | wc -l)
    echo "pods left: $left"
    exit "$code"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# The overlays with this run's suffix on every name (the claim and Secret references follow),
# and the token Secret the manifests expect, made here with a random token.
for overlay in dev dev/jobs; do
    dir=$WORK/kustomize/$(echo "$overlay" | tr / -)
    mkdir -p "$dir"
    # kustomize takes a base by a relative path only.
    base=$(realpath --relative-to="$dir" "$REPO/deploy/k8s/overlays/$overlay")
    cat >"$dir/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
nameSuffix: -$SUFFIX
resources:
  - $base
  - auth-token.yaml
EOF
    cat >"$dir/auth-token.yaml" <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: crs-auth-token
type: Opaque
# data, not stringData: podman 4.3 mounts only a Secret's data keys as files.
data:
  token: $(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' | base64 -w0)
EOF
    "$KUBECTL" kustomize "$dir" >"$WORK/$(basename "$dir").yaml" || die "kubectl kustomize $overlay"
done

# podman 4.3 plays Pods, Deployments, ConfigMaps and claims; it panics on a Secret in the
# YAML (it takes one as a podman secret), and skips the rest. Jobs become Pods of their
# template; Indexed Job pods get JOB_COMPLETION_INDEX as Kubernetes would set it.
"$PYTHON" - "$WORK" "$SUFFIX" <<'PY'
import copy, json, sys, yaml
work, suffix = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(open(f"{work}/dev.yaml")) if d]
jobs = [d for d in yaml.safe_load_all(open(f"{work}/dev-jobs.yaml")) if d]
by_kind = lambda kind, objects: [d for d in objects if d["kind"] == kind]
plan = {"skipped": sorted({f'{d["kind"]}' for d in docs + jobs if d["kind"] not in
        ("Deployment", "ConfigMap", "PersistentVolumeClaim", "Secret", "Job")})}
secret = by_kind("Secret", docs)[0]
yaml.safe_dump(secret, open(f"{work}/secret.yaml", "w"))
plan["secret"] = secret["metadata"]["name"]
plan["volume"] = by_kind("PersistentVolumeClaim", docs)[0]["metadata"]["name"]
config_maps = by_kind("ConfigMap", docs)
claims = by_kind("PersistentVolumeClaim", docs)

# The Jobs' overlay refers to the services' ConfigMap, claim and Secret by their names in
# a cluster; this run's suffix was added to those names only where they are defined.
defined = {d["metadata"]["name"] for d in docs if d["kind"] in ("ConfigMap", "PersistentVolumeClaim", "Secret")}

def suffixed(node):
    if isinstance(node, dict):
        for key in ("name", "claimName", "secretName"):
            value = node.get(key)
            if isinstance(value, str) and f"{value}-{suffix}" in defined:
                node[key] = f"{value}-{suffix}"
        for value in node.values():
            suffixed(value)
    elif isinstance(node, list):
        for value in node:
            suffixed(value)

def pod(job, name, index=None):
    template = copy.deepcopy(job["spec"]["template"])
    spec = template["spec"]
    suffixed(spec)
    if index is not None:
        for c in spec["containers"]:
            c.setdefault("env", []).append({"name": "JOB_COMPLETION_INDEX", "value": str(index)})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": template["metadata"]["labels"]}, "spec": spec}

# The claim goes with the first play only: podman 4.3 makes its volume then, and refuses
# a claim whose volume exists; later plays' pods mount that volume by the claim's name.
def write(name, objects, with_claim=False):
    yaml.safe_dump_all(config_maps + (claims if with_claim else []) + objects, open(f"{work}/{name}.yaml", "w"))

seed = [j for j in by_kind("Job", docs) if j["metadata"]["name"].startswith("crs-seed-bucket")][0]
write("seed", [pod(seed, f"seed-{suffix}")], with_claim=True)
deployments = by_kind("Deployment", docs)
write("services", deployments)
plan["deployments"] = [d["metadata"]["name"] for d in deployments]
train = [j for j in by_kind("Job", jobs) if j["metadata"]["name"].startswith("crs-train-once")][0]
write("train-job", [pod(train, f"train-job-{suffix}")])
batch = [j for j in by_kind("Job", jobs) if j["metadata"]["name"].startswith("crs-batch")][0]
plan["shards"] = batch["spec"]["completions"]
write("batch-job", [pod(batch, f"batch-{i}-{suffix}", i) for i in range(batch["spec"]["completions"])])
args = batch["spec"]["template"]["spec"]["containers"][0]["args"]
plan["batch_input"] = args[args.index("--input") + 1]
for d in deployments:
    c = d["spec"]["template"]["spec"]["containers"][0]
    plan[d["metadata"]["labels"]["app.kubernetes.io/name"]] = {
        "container": c["name"],
        "ready": {"path": c["readinessProbe"]["httpGet"]["path"], "port": c["readinessProbe"]["httpGet"]["port"]},
        "env": {e["name"]: e["value"] for e in c.get("env", []) if "value" in e},
    }
json.dump(plan, open(f"{work}/plan.json", "w"), indent=1)
PY
plan() { "$PYTHON" -c "import json,sys; p=json.load(open('$WORK/plan.json')); print(eval(sys.argv[1]))" "$1"; }
SECRET=$(plan 'p["secret"]')
VOLUME=$(plan 'p["volume"]')
echo "not run by podman (Kubernetes runs them): $(plan '", ".join(p["skipped"])')"

podman secret create "$SECRET" "$WORK/secret.yaml" >/dev/null
play() {
    local name=$1
    timeout "$TIMEOUT" podman kube play "$WORK/$name.yaml" >"$LOGS/play-$name.txt" 2>&1 \
        || { cat "$LOGS/play-$name.txt" >&2; die "podman kube play $name failed"; }
    mapfile -t new < <(sed -n '/^Pod:$/{n;p}' "$LOGS/play-$name.txt")
    for id in "${new[@]}"; do PODS+=("$(podman pod inspect --format '{{.Name}}' "$id")"); done
}
# Waits for a Job pod's container to exit; its exit code.
exit_code() { timeout "$TIMEOUT" podman wait "$1" 2>/dev/null | tail -n 1; }
wait_http() {
    local url=$1 what=$2 started
    started=$(now)
    until curl -fsS -o /dev/null "$url" 2>/dev/null; do
        awk -v s="$(since "$started")" -v t="$TIMEOUT" 'BEGIN { exit !(s > t) }' && die "$what: $url not answering 200 within ${TIMEOUT} s"
        sleep 1
    done
}

step "seeding the bucket volume $VOLUME with the image's config/ (the seed Job's pod)"
play seed
code=$(exit_code "seed-$SUFFIX-seed")
[[ $code == 0 ]] || die "the seed pod exited $code"

step "the Deployments' pods: $(plan '", ".join(p["deployments"])')"
t=$(now)
play services
TRAIN_CONTAINER="crs-train-$SUFFIX-pod-0-train"
SERVE_CONTAINER="crs-serve-$SUFFIX-pod-0-serve"
TRAIN_READY_URL="http://127.0.0.1:$(plan 'p["crs-train"]["ready"]["port"]')$(plan 'p["crs-train"]["ready"]["path"]')"
wait_http "$TRAIN_READY_URL" "train readiness"
TRAIN_READY=$(since "$t")
echo "train ready after $TRAIN_READY s ($TRAIN_READY_URL)"
# serve is not ready until a run is promoted; it must be alive meanwhile.
SERVE_PORT=$(plan 'p["crs-serve"]["ready"]["port"]')
SERVE_READY_URL="http://127.0.0.1:$SERVE_PORT$(plan 'p["crs-serve"]["ready"]["path"]')"
SERVE_LIVE_URL="http://127.0.0.1:$SERVE_PORT/v2/health/live"
# The help is read whole first: `grep -q` closing the pipe early would fail it under pipefail.
SERVE_HELP=$(podman exec "$SERVE_CONTAINER" /usr/local/bin/serve-service --help)
if grep -q SERVE_HTTP_ADDR <<<"$SERVE_HELP"; then
    SERVE_CHECK=http
    wait_http "$SERVE_LIVE_URL" "serve liveness with an empty bucket"
    SERVE_LIVE="200 with no model"
else
    # An image from before the REST listener: serve's probes cannot answer; use its gRPC health.
    SERVE_CHECK=grpc
    SERVE_LIVE="not checked: this image's serve-service has no SERVE_HTTP_ADDR"
fi
echo "serve live: $SERVE_LIVE"

step "input data: generated, and a prefix of files for the batch"
podman exec "$TRAIN_CONTAINER" /usr/local/bin/crctl gen-data --if-missing >"$LOGS/gen-data.txt"
INPUT_PREFIX=$(plan 'p["batch_input"]')
podman exec "$TRAIN_CONTAINER" /bin/sh -c "cd \"\$BUCKET_URL\" && mkdir -p $INPUT_PREFIX && for i in 0 1 2 3 4 5 6; do cp data/predict/input/prediction_input.csv.gz ${INPUT_PREFIX}part-\$i.csv.gz; done"
INPUTS=7

step "the training Job's pod"
t=$(now)
play train-job
code=$(exit_code "train-job-$SUFFIX-train")
podman logs "train-job-$SUFFIX-train" >"$LOGS/train-job.txt" 2>&1
[[ $code == 0 ]] || { tail -n 20 "$LOGS/train-job.txt" >&2; die "the training pod exited $code"; }
TRAIN_SECS=$(since "$t")
TRAINED=$(grep '^job .* succeeded' "$LOGS/train-job.txt" | tail -n 1)
RUN_ID=$(sed -n 's/^job .* run \([^;]*\);.*/\1/p' <<<"$TRAINED")
[[ -n $RUN_ID ]] || die "no run in the training pod's output: $(tail -n 5 "$LOGS/train-job.txt")"
echo "$TRAINED"

step "serve-service loads run $RUN_ID"
t=$(now)
if [[ $SERVE_CHECK == http ]]; then
    wait_http "$SERVE_READY_URL" "serve readiness"
else
    started=$(now)
    until podman exec "$SERVE_CONTAINER" /usr/local/bin/crctl --serve-addr 127.0.0.1:50052 health --service serve >/dev/null 2>&1; do
        awk -v s="$(since "$started")" -v t="$TIMEOUT" 'BEGIN { exit !(s > t) }' && die "serve not SERVING within ${TIMEOUT} s"
        sleep 1
    done
fi
SERVE_READY=$(since "$t")
podman exec "$SERVE_CONTAINER" /usr/local/bin/crctl --serve-addr 127.0.0.1:50052 model >"$LOGS/model.txt"
grep -q "run $RUN_ID" "$LOGS/model.txt" || die "serve does not serve run $RUN_ID: $(head -n 1 "$LOGS/model.txt")"
echo "ready $SERVE_READY s after the Job ended: $(head -n 1 "$LOGS/model.txt")"

step "a prediction"
podman exec "$SERVE_CONTAINER" /bin/sh -c \
    '/usr/local/bin/crctl --serve-addr 127.0.0.1:50052 predict --input "$BUCKET_URL/data/predict/input/prediction_input.csv.gz"' \
    >"$LOGS/predict.txt" 2>"$LOGS/predict-err.txt" || die "predict failed: $(cat "$LOGS/predict-err.txt")"
PREDICTED=$(($(wc -l <"$LOGS/predict.txt") - 1))
[[ $(head -n 1 "$LOGS/predict.txt") == "entity_id,device,cr" && $PREDICTED -gt 0 ]] || die "no predictions: $(head -n 3 "$LOGS/predict.txt")"
echo "$PREDICTED rows predicted: $(sed -n 2p "$LOGS/predict.txt")"

SHARDS=$(plan 'p["shards"]')
step "the batch Job's $SHARDS pods (JOB_COMPLETION_INDEX 0..$((SHARDS - 1)))"
t=$(now)
play batch-job
for ((i = 0; i < SHARDS; i++)); do
    code=$(exit_code "batch-$i-$SUFFIX-batch")
    podman logs "batch-$i-$SUFFIX-batch" >"$LOGS/batch-$i.txt" 2>&1
    [[ $code == 0 ]] || { tail -n 20 "$LOGS/batch-$i.txt" >&2; die "batch pod $i exited $code"; }
done
BATCH_SECS=$(since "$t")
MOUNT=$(podman volume inspect --format '{{.Mountpoint}}' "$VOLUME")
BATCH_CHECK=$("$PYTHON" - "$MOUNT" "$LOGS" "$SHARDS" "$INPUTS" "$INPUT_PREFIX" "$RUN_ID" <<'PY'
import glob, json, sys
mount, logs, shards, inputs, prefix, run = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
answers = []
for i in range(shards):
    # The answer is the JSON line that is not a log record (logs go to the same stream).
    lines = [json.loads(l) for l in open(f"{logs}/batch-{i}.txt") if l.startswith("{")]
    answers.append([l for l in lines if "timestamp" not in l][-1])
files = [f["input_key"] for a in answers for f in a["files"]]
assert sorted(files) == sorted(set(files)), f"an input predicted twice: {files}"
assert len(files) == inputs, f"{len(files)} inputs predicted of {inputs}"
assert all(a["run_id"] == run for a in answers), "a shard used another run"
summaries = [a.get("summary_key") for a in answers if a.get("summary_key")]
assert summaries, "no shard wrote the summary"
summary = json.load(open(f"{mount}/{summaries[0]}"))
listed = [f["input_key"] for f in summary["files"]]
assert listed == sorted(files), f"the summary lists {listed}"
per_shard = "/".join(str(len(a["files"])) for a in answers)
print(f'{len(listed)} files once each ({per_shard} per shard), {summary["rows_written"]} rows, summary {summaries[0]}')
PY
) || die "the batch check failed: $BATCH_CHECK"
echo "$BATCH_CHECK"

step "summary"
cat <<SUMMARY
podman          $(podman --version | awk '{print $3}'), image $IMAGE
overlay         deploy/k8s/overlays/dev (+ dev/jobs), names suffixed -$SUFFIX
not run         $(plan '", ".join(p["skipped"])') (podman kube play takes none of them)
train ready     $TRAIN_READY s after kube play ($TRAIN_READY_URL)
serve live      $SERVE_LIVE
training Job    exit 0 in $TRAIN_SECS s: ${TRAINED}
serve ready     $SERVE_READY s after the Job ended, serving run $RUN_ID (checked by $SERVE_CHECK)
prediction      $PREDICTED rows
batch Job       $SHARDS pods in $BATCH_SECS s: $BATCH_CHECK
result          OK
SUMMARY
