# The `urbis` image: one binary for every role (shard, beacon, bridge), run as a non-root user
# on a read-only root filesystem (the Helm chart mounts data, config and secrets).
FROM rust:1.88-bookworm AS build
# RocksDB's bindings need libclang at build time.
RUN apt-get update && apt-get install -y --no-install-recommends clang libclang-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p urbis-cli && cp target/release/urbis /urbis

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 urbis && useradd --uid 10001 --gid urbis --no-create-home urbis
COPY --from=build /urbis /usr/local/bin/urbis
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/urbis"]
