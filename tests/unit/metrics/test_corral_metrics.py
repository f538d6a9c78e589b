"""corral's own metrics: counters told by the supervisor, state read at scrape time."""

from __future__ import annotations

from collections import Counter

import pytest
from prometheus_client import CollectorRegistry

from metrics import (
    RESTART_REASONS,
    CorralMetrics,
    SupervisorCollector,
    render,
    restart_reason,
)


@pytest.mark.parametrize(("cause", "reason"), [
    ("oom", "oom"),
    ("start failed: exec: no such file", "start_failed"),
    ("killed by signal SIGKILL", "signal"),
    ("exit status 3", "exit"),
    ("", "exit"),
])
def test_restart_reason_is_bounded(cause: str, reason: str) -> None:
    assert restart_reason(cause) == reason
    assert reason in RESTART_REASONS


def test_restarts_and_exits_and_forgetting_a_container() -> None:
    registry = CollectorRegistry()
    m = CorralMetrics(registry)
    m.container_restarted("c1", "web", "exit status 1")
    m.container_restarted("c1", "web", "exit status 2")
    m.container_restarted("c1", "web2", "oom")             # renamed in between
    m.container_restarted("c2", "db", "killed by signal SIGKILL")
    m.container_exited(1)
    m.container_exited(137)
    m.container_exited(137)
    assert registry.get_sample_value("corral_container_restarts_total", {"id": "c1", "name": "web",
                                                                         "reason": "exit"}) == 2
    assert registry.get_sample_value("corral_container_exits_total", {"code": "137"}) == 2
    m.forget_container("c1")
    m.forget_container("c1")                                # twice: no error
    text = render(registry)[0].decode()
    assert 'id="c1"' not in text and 'id="c2"' in text


def test_latency_histograms() -> None:
    registry = CollectorRegistry()
    m = CorralMetrics(registry)
    m.start_seconds.observe(0.03)
    m.stop_seconds.observe(12)
    assert registry.get_sample_value("corral_container_start_duration_seconds_bucket", {"le": "0.05"}) == 1
    assert registry.get_sample_value("corral_container_start_duration_seconds_bucket", {"le": "0.025"}) == 0
    assert registry.get_sample_value("corral_container_stop_duration_seconds_count") == 1


def test_supervisor_collector_reads_at_scrape_time() -> None:
    registry = CollectorRegistry()
    states = Counter({"running": 2, "exited": 1})
    seq = [10]
    registry.register(SupervisorCollector(
        states=lambda: states, all_states=("created", "running", "paused", "restarting", "exited"),
        events_total=lambda: seq[0], subscribers=lambda: 3, journal_events=lambda: 7,
        start_time_s=1000.0, version="0.1.0"))
    assert registry.get_sample_value("corral_containers", {"state": "running"}) == 2
    assert registry.get_sample_value("corral_containers", {"state": "paused"}) == 0   # present, 0
    assert registry.get_sample_value("corral_events_total") == 10
    seq[0] = 12
    states["running"] = 0
    assert registry.get_sample_value("corral_events_total") == 12
    assert registry.get_sample_value("corral_containers", {"state": "running"}) == 0
    assert registry.get_sample_value("corral_event_subscribers") == 3
    assert registry.get_sample_value("corral_journal_events") == 7
    assert registry.get_sample_value("corral_build_info", {"version": "0.1.0"}) == 1


def test_render_negotiates_openmetrics() -> None:
    registry = CollectorRegistry()
    CorralMetrics(registry).container_exited(0)
    body, ctype = render(registry, "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
    assert ctype.startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")
    body, ctype = render(registry, "")
    assert ctype == "text/plain; version=0.0.4; charset=utf-8" and b"# EOF" not in body
