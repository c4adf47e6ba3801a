# Both services and crctl in one image. Build: docker build -t crs .
# The build stage compiles in release mode; the runtime stage is a slim Debian
# with the three binaries, the default hyperparameter configs and a non-root user.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# Stripped here only: the symbol tables are a quarter of each binary (about 33 MB of the
# three). A panic in the image still names its message and source line, but a backtrace
# shows no function names; builds outside the image keep them for profilers.
RUN CARGO_PROFILE_RELEASE_STRIP=symbols cargo build --release --locked -p train-service -p serve-service -p crctl

FROM debian:bookworm-slim
# CA certificates for S3 and Slack over TLS. apt's caches and logs are removed in the same
# layer: a base without Docker's apt clean-up hook would keep about 80 MB of them.
# --no-log-init: useradd's lastlog entry for a high uid is a sparse file layers store whole.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
    && useradd --system --no-log-init --uid 10001 --create-home --home-dir /app crs
COPY --from=build /src/target/release/train-service /src/target/release/serve-service /src/target/release/crctl /usr/local/bin/
COPY --chown=crs:crs bucket/config /app/bucket/config
WORKDIR /app
USER crs
ENV BUCKET_URL=/app/bucket \
    TRAIN_ADDR=0.0.0.0:50051 \
    SERVE_ADDR=0.0.0.0:50052 \
    SERVE_HTTP_ADDR=0.0.0.0:8080 \
    RUST_LOG=info
# 50051 train-service gRPC, 50052 serve-service gRPC, 8080 serve-service REST (/v2/...),
# 8090 train-service's console (TRAIN_HTTP_ADDR).
EXPOSE 50051 50052 8080 8090
CMD ["train-service"]
