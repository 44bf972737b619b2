"""Keyspace layer: the one home of every Redis key name taskdash reads or writes (``keys``) and of every
Lua script it runs (``scripts``). Depends only on ``core``.
"""
