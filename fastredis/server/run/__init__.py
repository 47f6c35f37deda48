"""Running the server: its settings, the Starlette app assembled from the other parts,
`fastredis serve` (one process or ``--workers N``), health checks and Prometheus metrics."""
