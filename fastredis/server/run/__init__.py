"""Running the server: the option table of `fastredis serve` and the settings made from
it, the Starlette app assembled from the other parts, `fastredis serve` (one process or
``--workers N``) and its embedded Valkey, health checks and Prometheus metrics."""
