"""Serving layer: renders snapshots for other programs (the Prometheus ``taskdash metrics`` endpoint)."""
