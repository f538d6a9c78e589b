"""The /metrics body: the text format or OpenMetrics, as the scraper's Accept header asks.

Sync and blocking (it runs every collector, which reads cgroup files): the
supervisor calls it from a worker thread.
"""

from __future__ import annotations

import gc

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
    # A scrape of a thousand containers makes ~10^5 short-lived objects (samples,
    # label dicts, lines), all alive until the body is encoded. With the cyclic
    # collector on they get promoted and trigger full collections of the whole
    # daemon's heap: 100 ms with the GIL held, every thread stopped, the event
    # loop included (bench/metrics.py saw them). None of them is in a cycle, so
    # reference counting frees them all when the body is done: the collector is
    # off for the scrape (scrapes never overlap: the server runs one at a time).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return encode(registry), content_type
    finally:
        if enabled:
            gc.enable()
