"""aigc-service's gRPC server: one typed API in front of many LLM vendors.

Layout: `app` assembles the server; `api/` holds the adapters (the gRPC
servicer) over `core/`, which validates, routes, calls the provider, retries
and folds streams without knowing any transport; `routing` maps model names
to providers; `providers/` holds one module per vendor behind
`providers.base.Provider`, each with pure wire translations; `errors` is the
one place errors become google.rpc.Status; `config` and `catalog` read
settings once.
"""
