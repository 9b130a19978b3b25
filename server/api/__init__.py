"""API adapters over the core engine: each turns its wire format into aigc.v1
requests and the engine's answers back (grpc_servicer.py: AigcService on gRPC)."""
