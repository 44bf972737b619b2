"""Analysis layer: what taskdash concludes from successive reads (poison loops, crash forensics, lint
rules, the persistent history). Depends on ``core`` and ``reads``; never writes to Redis.
"""
