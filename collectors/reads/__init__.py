"""Read layer: one reader per source (broker queues and the unacked ledger, result backend, workers via
inspect and heartbeats, Redis health, task search). Reads never change the monitored Redis.

Depends on ``core`` and ``keyspace``.
"""
