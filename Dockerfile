# syntax=docker/dockerfile:1
# The server, its operator command and the local upstream, in one small image that runs as a
# non-root user. Built by `docker compose build` (see docker-compose.yml) or:
#   docker build -t aiwrapper .

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# Release binaries only; the registry and target dir are build caches, not image layers.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p api -p migration -p upstream \
      --bin api --bin admin --bin migration --bin local-upstream \
 && mkdir -p /out \
 && cp target/release/api target/release/admin target/release/migration \
       target/release/local-upstream /out/

FROM debian:bookworm-slim AS runtime
# ca-certificates for https upstreams (api.openai.com); curl for the health checks.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /app --create-home app
COPY --from=build /out/ /usr/local/bin/
USER 10001:10001
WORKDIR /app
ENV HOST=0.0.0.0 \
    PORT=4000 \
    RUST_LOG=info
EXPOSE 4000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${PORT}/readyz" || exit 1
CMD ["api"]
