"""Record streams to MCAP files and replay them (`fastredis record`, `fastredis replay`).

* `fastredis.recording.record`: one MCAP channel per stream, each entry a message whose
  ``log_time`` is its entry id's time and whose ``sequence`` its id's sequence number,
  in compressed chunks with a summary and indexes; one batch read of every stream per
  round; across a Redis restart it reconnects, resumes from the last id, and writes any
  gap as a ``gap`` metadata record.
* `fastredis.recording.replay`: writes the entries back with their relative timing
  (``speed`` 0: as fast as possible), with their own ids where the target stream allows
  it, else new ids (and says so).

Nothing is imported here, so `fastredis --help` lists the subcommands without the
record extra (mcap).
"""
