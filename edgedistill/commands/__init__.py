"""CLI verbs beyond distill/inspect, one module per step; each has `register(app)` (see cli.py)."""
