"""Scraping a real daemon's /metrics: shared by tests/integration/test_metrics*.py.

Every daemon here runs on a free port (never dockerd's 9323: other daemons may
hold it) and is closed by its fixture whatever the test did.
"""

from __future__ import annotations

import contextlib
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.cgroups import open_cgroup

from ._daemon import Daemon

SCRAPE_TIMEOUT_S = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int, accept: str | None = None) -> tuple[str, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=SCRAPE_TIMEOUT_S) as response:
        return response.read().decode(), response.headers["Content-Type"]


def samples(text: str, metric: str, **labels: str) -> list[float]:
    """Values of ``metric`` whose labels include ``labels`` (the text format, parsed by prometheus_client)."""
    from prometheus_client.parser import text_string_to_metric_families
    return [s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items())]


def labelled(text: str, metric: str, **labels: str) -> list[dict[str, str]]:
    """Label sets of ``metric``'s samples whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families
    return [s.labels for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items())]


def container_series(text: str, **labels: str) -> list[str]:
    """Names of the cAdvisor (``container_*``) samples whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families
    return [s.name for f in text_string_to_metric_families(text) if f.name.startswith("container_")
            for s in f.samples if all(s.labels.get(k) == v for k, v in labels.items())]


@contextlib.contextmanager
def metrics_daemon_on(tmp_path: Path, cgroup_parent: str, *extra_args: str) -> Iterator[Daemon]:
    """A started daemon serving /metrics on a free port (``d.metrics_port``), busybox bootstrapped."""
    port = free_port()
    d = Daemon(tmp_path, cgroup_parent, "--metrics-addr", f"127.0.0.1:{port}", *extra_args)
    d.metrics_port = port
    d.start()
    try:
        d.ok("image", "bootstrap", "busybox")
        yield d
    finally:
        d.close()


@pytest.fixture(name="metrics_daemon")
def metrics_daemon_fixture(tmp_path: Path, cgroup_parent: str):
    with metrics_daemon_on(tmp_path, cgroup_parent) as d:
        yield d


def cgroup_of(d: Daemon, cid: str):
    # Resolved against the daemon's own cgroup, as the daemon resolves it.
    own = Path(f"/proc/{d.process.pid}/cgroup").read_text()
    return open_cgroup(f"{d.cgroup_parent}/{cid}", self_cgroup=own)
