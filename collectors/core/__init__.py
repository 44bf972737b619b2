"""Core layer: settings and URL handling, the frozen snapshot models, safe message decoding, the audit log.

Depends on nothing else in ``collectors``; every other layer may import it.
"""
