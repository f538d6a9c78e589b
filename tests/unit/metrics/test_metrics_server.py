"""The /metrics HTTP handler and the Engine-facing hub, without root.

The server tests run on a real clock (``trio.run``), not the autojump clock:
the handler's head timeout would fire at once while a socket waits.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry

from metrics import CorralMetrics
from runtime.cgroups import Resources
from supervisor import metrics_server
from supervisor.metrics_server import (
    BadRequest,
    MetricsHub,
    parse_metrics_addr,
    parse_request_head,
    serve_metrics,
)
from supervisor.task import Supervised

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "mountinfo"


@pytest.mark.parametrize(("text", "parsed"), [
    ("127.0.0.1:9323", ("127.0.0.1", 9323)),
    ("[::1]:9323", ("::1", 9323)),
    (":9323", (None, 9323)),
    ("", None),
    ("none", None),
    (" None ", None),
])
def test_parse_metrics_addr(text: str, parsed) -> None:
    assert parse_metrics_addr(text) == parsed


@pytest.mark.parametrize("text", ["9323", "localhost", "host:99999", "::1:9323", "host:port"])
def test_parse_metrics_addr_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="invalid metrics address"):
        parse_metrics_addr(text)


def test_parse_request_head() -> None:
    r = parse_request_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: a/b\r\naccept: c/d")
    assert (r.method, r.path, r.headers["accept"], r.headers["host"]) == ("GET", "/metrics", "a/b, c/d", "a")


@pytest.mark.parametrize("head", [
    b"GET /metrics\r\n",
    b"GET  /metrics HTTP/1.1",
    b"GET /metrics SPDY/3",
    b"GET /metrics HTTP/1.1\r\nno colon",
    b"GET /metrics HTTP/1.1\r\n folded: value",
    b"GET /metrics HTTP/1.1\r\nName : value",
    "GET /m\u00e9trics HTTP/1.1".encode(),
])
def test_parse_request_head_refuses(head: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        parse_request_head(head)
    assert info.value.status == 400


def _exchange(request: bytes, *, registry: CollectorRegistry | None = None, close_write: bool = False) -> bytes:
    """Start the server on a free port, send ``request`` from a plain socket thread, return the reply."""
    registry = registry or CollectorRegistry()

    def client(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(request)
            if close_write:
                s.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)

    async def main() -> bytes:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                port = await nursery.start(serve_metrics, "127.0.0.1", 0, registry)
                reply = await trio.to_thread.run_sync(client, port)
                nursery.cancel_scope.cancel()
        return reply

    return trio.run(main)


def test_get_metrics_text_and_openmetrics() -> None:
    registry = CollectorRegistry()
    CorralMetrics(registry).container_exited(3)
    reply = _exchange(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", registry=registry)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: text/plain; version=0.0.4; charset=utf-8" in head
    assert b"Connection: close" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert b'corral_container_exits_total{code="3"} 1.0' in body
    reply = _exchange(b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n",
                      registry=registry)
    assert b"Content-Type: application/openmetrics-text" in reply and reply.endswith(b"# EOF\n")


def test_head_has_no_body() -> None:
    reply = _exchange(b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK") and reply.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET / HTTP/1.1\r\n\r\n", b"404"),
    (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"405"),
    (b"nonsense\r\n\r\n", b"400"),
    (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 10000 + b"\r\n\r\n", b"431"),
])
def test_errors(request_bytes: bytes, status: bytes) -> None:
    assert _exchange(request_bytes).startswith(b"HTTP/1.1 " + status)


def test_head_cut_short() -> None:
    assert _exchange(b"GET /metrics HTTP/1.1\r\n", close_write=True).startswith(b"HTTP/1.1 400")


def test_a_collector_bug_is_a_500_not_a_dead_daemon() -> None:
    class Broken:
        def collect(self):
            raise RuntimeError("bug")

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Broken())
    assert _exchange(b"GET /metrics HTTP/1.1\r\n\r\n", registry=registry).startswith(b"HTTP/1.1 500")


def test_slow_client_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_server, "HEAD_TIMEOUT_S", 0.2)
    assert _exchange(b"GET /metrics HTTP/1.1\r\n").startswith(b"HTTP/1.1 408")


def _hub() -> MetricsHub:
    return MetricsHub(mountinfo=(FIXTURES / "unified-uml.txt").read_text(),
                      self_cgroup=(FIXTURES / "unified-uml.self-cgroup.txt").read_text())


def _sup(status: str = "running") -> Supervised:
    return Supervised(id="c1", name="web", config={}, bundle="/b", cgroup="corral/c1",
                      resources=Resources(memory_max_bytes=64 << 20), status=status, started_at_ns=5 * 10**9)


def test_hub_tracks_on_start_and_untracks_on_die() -> None:
    async def main() -> MetricsHub:
        hub = _hub()
        sup = _sup()
        hub.starting("c1")
        await trio.sleep(0.5)
        hub.observe("start", sup, image="busybox", labels={"a": "b"}, attributes={})
        tracked = hub.containers.tracked()["c1"]
        assert (tracked.name, tracked.image, tracked.started_at_s) == ("web", "busybox", 5.0)
        assert tracked.cgroup.name == "/corral/c1"
        sup.name = "web2"
        hub.observe("rename", sup, image="busybox", labels={}, attributes={"oldName": "/web"})
        assert hub.containers.tracked()["c1"].name == "web2"
        hub.observe("die", sup, image="busybox", labels={}, attributes={"exitCode": "137"})
        assert "c1" not in hub.containers.tracked()
        hub.observe("restart", sup, image="busybox", labels={},
                    attributes={"restartCount": "1", "cause": "killed by signal SIGKILL", "delay": "0.100"})
        await trio.sleep(0.35)
        hub.observe("start", sup, image="busybox", labels={}, attributes={})
        assert "c1" in hub.containers.tracked()
        hub.stopping("c1")
        await trio.sleep(2)
        sup.status = "exited"
        hub.observe("stop", sup, image="busybox", labels={}, attributes={})
        return hub

    def destroy(hub: MetricsHub) -> None:
        async def main() -> None:
            hub.observe("destroy", _sup("exited"), image="", labels={}, attributes={})
        trio.run(main)

    hub = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    r = hub.registry
    assert r.get_sample_value("corral_container_exits_total", {"code": "137"}) == 1
    assert r.get_sample_value("corral_container_restarts_total", {"id": "c1", "name": "web2", "reason": "signal"}) == 1
    assert r.get_sample_value("corral_container_start_duration_seconds_count") == 2
    # 0.5 s for the first start, 0.25 s after the 0.1 s delay for the second.
    assert r.get_sample_value("corral_container_start_duration_seconds_sum") == pytest.approx(0.75)
    assert r.get_sample_value("corral_container_stop_duration_seconds_sum") == pytest.approx(2.0)
    destroy(hub)
    assert r.get_sample_value("corral_container_restarts_total", {"id": "c1", "name": "web2", "reason": "signal"}) \
        is None
    assert hub.containers.tracked() == {}
