"""Write layer: every change taskdash makes to the broker, grouped by what it changes. All writes share
one guarded base (read-only refusal, error masking, audit line). Depends on every layer below it.
"""
