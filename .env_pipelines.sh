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
