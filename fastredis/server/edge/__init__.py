"""Where a request enters: what the protocol accepts (stream ids, entry ids, query
parameters, close codes), access control (tokens, grants, log redaction), browser
origins, what a trusted reverse proxy forwards (and the root path), the raw-path guard,
uvicorn's hardened protocols, and the one table from a failure to what a client is
told."""
