"""`python -m server`: run the gRPC server until SIGINT/SIGTERM."""

import asyncio
import logging
import sys

from server.app import serve
from server.config import ConfigError, Settings


def main() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"aigc-service: bad configuration: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stdout,
    )
    # httpx2 logs every upstream request at INFO, including llama.cpp's
    # internal port; our own lines say what matters.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
