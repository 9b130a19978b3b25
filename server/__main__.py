"""`python -m server`: run the gRPC server until SIGINT/SIGTERM."""

import asyncio
import logging
import sys

from server.app import serve
from server.config import ConfigError, Settings
from server.observability import ObservabilitySettings, configure_logging


def main() -> int:
    try:
        settings = Settings.from_env()
        observability = ObservabilitySettings.from_env()
    except ConfigError as exc:
        print(f"aigc-service: bad configuration: {exc}", file=sys.stderr)
        return 2
    # JSON lines on stdout (AIGC_LOG_FORMAT=console for people): one access
    # line per RPC plus application logs, all with the request id.
    configure_logging(settings.log_level, observability.log_format)
    # httpx/httpx2 log every upstream request at INFO, including llama.cpp's
    # internal port; our access lines say what matters. httpcore's DEBUG trace
    # would print SOCKS proxy credentials: never below WARNING, even at DEBUG.
    for name in ("httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(name).setLevel(logging.WARNING)
    asyncio.run(serve(settings, observability))
    return 0


if __name__ == "__main__":
    sys.exit(main())
