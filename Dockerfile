# Airlock in a container: a Rust build stage and a slim runtime stage.
#
#   docker build -t airlock .
#   docker run -p 8080:8080 -e AIRLOCK_CONFIG=/config/airlock.toml \
#     -v $PWD/airlock.toml:/config/airlock.toml:ro -v airlock-data:/data \
#     -e AIRLOCK_STORE_PASSWORD=... airlock
#
# Configuration comes from the file AIRLOCK_CONFIG names. The embedded quick-start config
# has the dev issuer, which Airlock refuses on a non-loopback listener such as this image's
# 0.0.0.0:8080: a container needs a config with a real issuer. Secrets are referenced from
# the config as `env:NAME` or `file:/path`
# (mount them, never bake them into the image). The data directory (/data) holds the
# embedded SQLite store, the dev issuer's key and the audit spool: mount a volume there,
# or use a PostgreSQL store ([store] url) and nothing in it needs to outlive the container.
# tests/integration/deploy.rs checks this file against the binary's flags.

FROM rust:1.95-bookworm AS builder
# pg_query builds libpg_query with bindgen, which needs libclang.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libclang-dev clang \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY tests ./tests
COPY migrations ./migrations
COPY openapi ./openapi
RUN cargo build --release --locked --bin airlock

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin airlock \
 && mkdir -p /data \
 && chown airlock:airlock /data
COPY --from=builder /src/target/release/airlock /usr/local/bin/airlock
USER airlock
ENV AIRLOCK_DATA_DIR=/data \
    AIRLOCK_LISTEN=0.0.0.0:8080
VOLUME ["/data"]
EXPOSE 8080
# The default command rather than an ENTRYPOINT: a platform that runs another command in
# the image (Fly's release_command "airlock migrate", `docker run airlock airlock token ...`)
# replaces it as written instead of appending to it.
CMD ["airlock", "serve"]
