"""aigc-service's gRPC server: one typed API in front of many LLM vendors.

Layout: `app` assembles the server, `service` implements the RPCs,
`validation` checks requests, `routing` maps model names to providers,
`providers/` holds one module per vendor behind `providers.base.Provider`,
`errors` is the one place errors become google.rpc.Status, `config` reads
settings once.
"""
