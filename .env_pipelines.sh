# Settings of the build pipeline and of both services. build_pipeline.sh sources
# this file; docker-compose.yml takes the same names from the environment. Every
# value can be overridden from the environment, e.g. MODEL_VER=v0 ./build_pipeline.sh

# Model version to train and serve (crctl versions lists them).
export MODEL_VER="${MODEL_VER:-v1}"
# The bucket: a folder, file://..., or s3://bucket/prefix (AWS_* variables configure S3).
export BUCKET_URL="${BUCKET_URL:-./bucket}"
# Bucket keys of the training data, the evaluation data and the prediction input.
export TRAIN_KEY="${TRAIN_KEY:-data/train/train.csv.gz}"
export EVAL_KEY="${EVAL_KEY:-data/train/eval.csv.gz}"
export PREDICT_INPUT_KEY="${PREDICT_INPUT_KEY:-data/predict/input/prediction_input.csv.gz}"
# Hyperparameter YAML key; empty means config/<MODEL_VER>/params.yaml.
export CONFIG_KEY="${CONFIG_KEY:-}"
# Slack incoming-webhook URL; empty means no notices. A secret: keep it out of git.
export WEBHOOK_URL="${WEBHOOK_URL:-}"
# Where the services listen, host:port.
export TRAIN_ADDR="${TRAIN_ADDR:-127.0.0.1:50051}"
export SERVE_ADDR="${SERVE_ADDR:-127.0.0.1:50052}"
# serve-service's Open Inference Protocol over HTTP/REST (curl, tritonclient.http, probes).
export SERVE_HTTP_ADDR="${SERVE_HTTP_ADDR:-127.0.0.1:8080}"
# The model registry console and its JSON API (train-service), host:port; empty means none.
export TRAIN_HTTP_ADDR="${TRAIN_HTTP_ADDR:-127.0.0.1:8090}"
# Security, unset by default (docs/security.md); each is passed on only when set.
# AUTH_TOKEN or AUTH_TOKEN_FILE: the bearer token the services require on every RPC
# that changes something, and that crctl sends. A secret: keep it out of git.
# TLS_CERT and TLS_KEY: PEM files the services serve TLS with. TLS_CA: the PEM of the
# CA crctl trusts; set, crctl connects with https.
if [[ -n ${AUTH_TOKEN:-} ]]; then export AUTH_TOKEN; fi
if [[ -n ${AUTH_TOKEN_FILE:-} ]]; then export AUTH_TOKEN_FILE; fi
if [[ -n ${TLS_CERT:-} ]]; then export TLS_CERT; fi
if [[ -n ${TLS_KEY:-} ]]; then export TLS_KEY; fi
if [[ -n ${TLS_CA:-} ]]; then export TLS_CA; fi
