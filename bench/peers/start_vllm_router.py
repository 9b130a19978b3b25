"""Start vllm-router (PyPI vllm-router, its Rust binary in the wheel) in front of one worker.

    python bench/peers/start_vllm_router.py --port PORT --worker-url http://127.0.0.1:UPSTREAM

The package's own console script imports its Python debugging balancer
(FastAPI) before it starts the Rust router; this builds the same RouterArgs
and starts the Rust router directly, so the bench needs no FastAPI. One
worker, round robin (its default, cache_aware, keeps a prefix tree the bench's
single worker does not need), no retries: the router as a plain front door.
"""

from __future__ import annotations

import argparse

from vllm_router.router import Router
from vllm_router.router_args import RouterArgs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--worker-url", required=True)
    args = parser.parse_args()
    router_args = RouterArgs(
        worker_urls=[args.worker_url],
        host="127.0.0.1",
        port=args.port,
        policy="round_robin",
        disable_retries=True,
        worker_startup_check_interval=1,
        log_level="warn",
    )
    Router.from_args(router_args).start()


if __name__ == "__main__":
    main()
