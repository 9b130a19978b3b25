"""Container health checks (stdlib + grpcio only), for docker-compose.yml.

    python scripts/healthcheck.py grpc 127.0.0.1:9000    # grpc.health.v1 says SERVING
    python scripts/healthcheck.py http http://127.0.0.1:9901/ready
Exit 0 when healthy, 1 otherwise.
"""

from __future__ import annotations

import sys
import urllib.request


def main(argv: list[str]) -> int:
    kind, target = argv[1], argv[2]
    try:
        if kind == "grpc":
            import grpc
            from grpc_health.v1 import health_pb2, health_pb2_grpc

            with grpc.insecure_channel(target) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
            return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1
        with urllib.request.urlopen(target, timeout=3) as response:
            return 0 if response.status == 200 else 1
    except Exception as exc:  # any failure means unhealthy; say why
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
