# The edge node image for localstack/docker-compose.yml (build context: the
# repository root). Release build in the Rust image, run on Debian slim.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p edge-node --bin edge-node \
    && cp target/release/edge-node /usr/local/bin/edge-node

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/edge-node /usr/local/bin/edge-node
# Client WebSockets, and the push API (+ health checks).
EXPOSE 9001 9101
USER nobody
ENTRYPOINT ["/usr/local/bin/edge-node"]
CMD ["serve"]
