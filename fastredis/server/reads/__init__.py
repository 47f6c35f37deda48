"""The read side: the hub (one shared read per stream at the tail), parking (the one
blocking read over idle streams), shared catch-up reads, the splice pump (a lone pull's
catch-up past the hub), the per-stream cursor, and what Redis says about streams (keys,
consumer groups)."""
