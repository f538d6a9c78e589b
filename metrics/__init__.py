"""Prometheus collectors for corral (issue: metrics). Reads counters through runtime."""

__all__: list[str] = []
