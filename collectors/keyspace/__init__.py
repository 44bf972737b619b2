"""Keyspace layer: the one home of every Redis key name taskdash reads or writes (``keys.KeyLayout``) and
of every Lua script it runs (``scripts``). Depends only on ``core``.
"""
