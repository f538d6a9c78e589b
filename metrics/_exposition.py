"""The /metrics body: the text format or OpenMetrics, as the scraper's Accept header asks.

Sync and blocking (it runs every collector, which reads cgroup files): the
supervisor calls it from a worker thread.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder


def render(registry: CollectorRegistry, accept: str = "") -> tuple[bytes, str]:
    """Collect ``registry`` and encode it for a scraper that sent ``accept``.

    Args:
        registry: The registry to collect.
        accept: The request's Accept header; ``""`` when absent. OpenMetrics
            is used only when it names ``application/openmetrics-text``
            (Prometheus does by default); anything else gets the 0.0.4 text
            format, which every scraper reads.

    Returns:
        The body and its Content-Type.
    """
    # prometheus_client's own negotiation, so the body and the content type it
    # announces come from one place and follow the library's format versions.
    encode, content_type = choose_encoder(accept)
    return encode(registry), content_type
