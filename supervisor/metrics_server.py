"""``/metrics`` over HTTP on ``--metrics-addr``, and the glue that tells metrics/ what runs.

Rules:

1. The event loop never collects. Collecting reads a few cgroup files per
   container (a thousand containers: thousands of reads), so the exposition
   is built in a worker thread (``trio.to_thread.run_sync``) behind a
   ``CapacityLimiter(1)``: concurrent scrapes queue instead of multiplying
   threads and cgroup reads. Only socket I/O happens on the loop.
2. One request per connection, answered with ``Connection: close``.
   Prometheus keeps a connection per target and reconnects when told to; in
   exchange there is no keep-alive state, no pipelining and no body framing
   to get wrong on the way in.
3. Bounded everywhere: the request head (8 KiB), the time a client has to
   send it (10 s), and the connections served at once (the rest are closed
   at accept). A slow or hostile client costs one socket, never a thread.
4. ``MetricsHub`` is told by the Engine (``observe``), never asks it;
   everything it does is sync and cheap, so the Engine calls it inline.

Rejected:
- prometheus_client's ``start_http_server``: it runs a ``ThreadingHTTPServer``
  on daemon threads outside the nursery, so the daemon could neither cancel it
  on shutdown nor bound its threads (one per connection, unbounded), and bind
  errors would surface outside ``serve()``.
- h11: the right tool for a full HTTP server, but not a dependency, and a GET
  with no body answered with ``Connection: close`` needs none of its
  machinery. When the Docker API server brings h11 in, this handler should
  move onto it.
- gzip: Prometheus asks for it; not done yet (the body is ~3 KiB per container).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import trio
from prometheus_client import CollectorRegistry

from metrics import CgroupCollector, CorralMetrics, TrackedContainer, render
from runtime.cgroups import open_cgroup
from runtime.errors import CgroupError
from runtime.net import NetnsCounters

from .task import Supervised

log = logging.getLogger("corral.metrics")

DEFAULT_METRICS_ADDR = "127.0.0.1:9323"   # dockerd's --metrics-addr default port
MAX_HEAD_BYTES = 8192
HEAD_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 16
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}


# --- the address ------------------------------------------------------------------------

def parse_metrics_addr(text: str) -> tuple[str | None, int] | None:
    """``--metrics-addr`` -> (host, port), or ``None`` when disabled.

    ``127.0.0.1:9323``, ``[::1]:9323``, ``:9323`` (every address, host ``None``);
    ``""`` and ``none`` disable the endpoint.

    Raises:
        ValueError: Not ``HOST:PORT`` or the port is not 0..65535.
    """
    text = text.strip()
    if text.lower() in ("", "none"):
        return None
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"invalid metrics address {text!r}: expected HOST:PORT, '' or 'none'")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"invalid metrics address {text!r}: put an IPv6 address in brackets, [::1]:9323")
    return (host or None), int(port_text)


# --- HTTP, the little of it we need --------------------------------------------------------

class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]   # lower-case names; a repeated header's values joined by ", "


def parse_request_head(head: bytes) -> Request:
    """Parse an HTTP/1.x request line and headers (the bytes before the blank line). Pure.

    Raises:
        BadRequest: With the status to answer (400 malformed, 505-ish versions as 400).
    """
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest(400, "request head is not ASCII") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha():
        raise BadRequest(400, f"malformed request line {lines[0][:100]!r}")
    method, target, _ = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        # No obsolete line folding, no space before the colon (RFC 9112 5.1, 5.2).
        if not sep or not name or name != name.strip() or any(c in name for c in " \t"):
            raise BadRequest(400, f"malformed header line {line[:100]!r}")
        key = name.lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return Request(method, target.partition("?")[0], headers)


def response_head(status: int, content_type: str, length: int) -> bytes:
    return (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {length}\r\nConnection: close\r\n\r\n").encode("ascii")


async def _read_head(stream: trio.abc.Stream) -> bytes:
    buf = bytearray()
    while True:
        end = buf.find(b"\r\n\r\n")
        if 0 <= end <= MAX_HEAD_BYTES:
            return bytes(buf[:end])
        if end > MAX_HEAD_BYTES or len(buf) > MAX_HEAD_BYTES:
            raise BadRequest(431, f"request head exceeds {MAX_HEAD_BYTES} bytes")
        data = await stream.receive_some(4096)
        if not data:
            raise BadRequest(400, "connection closed before the request head ended")
        buf += data


async def _answer(stream: trio.abc.Stream, registry: CollectorRegistry, limiter: trio.CapacityLimiter) -> None:
    try:
        with trio.fail_after(HEAD_TIMEOUT_S):
            request = parse_request_head(await _read_head(stream))
    except trio.TooSlowError:
        status, body, ctype = 408, b"request head not received in time\n", "text/plain; charset=utf-8"
    except BadRequest as exc:
        status, body, ctype = exc.status, f"{exc}\n".encode(), "text/plain; charset=utf-8"
    else:
        status, body, ctype = await _respond(request, registry, limiter)
        if request.method == "HEAD":
            await stream.send_all(response_head(status, ctype, len(body)))
            return
    await stream.send_all(response_head(status, ctype, len(body)) + body)


async def _respond(request: Request, registry: CollectorRegistry,
                   limiter: trio.CapacityLimiter) -> tuple[int, bytes, str]:
    plain = "text/plain; charset=utf-8"
    if request.path != "/metrics":
        return 404, b"not found; metrics are at /metrics\n", plain
    if request.method not in ("GET", "HEAD"):
        return 405, b"only GET and HEAD\n", plain
    try:
        body, ctype = await trio.to_thread.run_sync(render, registry, request.headers.get("accept", ""),
                                                    limiter=limiter)
    except Exception:
        # A collector bug: the scrape fails, the daemon and its containers go on.
        log.exception("collecting metrics failed; answering 500")
        return 500, b"collecting metrics failed; see the daemon's log\n", plain
    return 200, body, ctype


async def serve_metrics(host: str | None, port: int, registry: CollectorRegistry, *,
                        task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``registry`` at ``http://host:port/metrics`` until cancelled.

    ``task_status.started(port)`` once listening (the real port when ``port`` is 0).

    Raises:
        OSError: The address cannot be bound (before ``started``).
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    limiter = trio.CapacityLimiter(1)
    slots = trio.Semaphore(MAX_CONNECTIONS)

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                slots.acquire_nowait()
            except trio.WouldBlock:
                return                         # over the limit: closed at once (rule 3)
            try:
                await _answer(stream, registry, limiter)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass                           # the scraper went away; nothing to answer
            finally:
                slots.release()

    bound = listeners[0].socket.getsockname()[1]
    log.info("metrics at http://%s:%d/metrics", host or "*", bound)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        task_status.started(bound)


# --- what the Engine tells us ------------------------------------------------------------

class MetricsHub:
    """The daemon's registry, its collectors, and the Engine's view of them.

    Args:
        mountinfo: /proc/self/mountinfo text and
        self_cgroup: /proc/self/cgroup text, read once by the daemon, so
            opening a container's cgroup here is pure (no file read on the
            loop) and resolves relative paths exactly as ``LinuxHost`` does.
        allowed_labels: Container labels exported as metric labels.
    """

    def __init__(self, *, mountinfo: str, self_cgroup: str, allowed_labels: tuple[str, ...] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.containers = CgroupCollector(allowed_labels=allowed_labels)
        self.registry.register(self.containers)
        self.corral = CorralMetrics(self.registry)
        self._mountinfo = mountinfo
        self._self_cgroup = self_cgroup
        # trio.current_time() when a start is due (request, or end of restart delay) / a stop was asked.
        self._start_due: dict[str, float] = {}
        self._stop_asked: dict[str, float] = {}
        # Each running container's network namespace, held open while it is tracked.
        self._netns: dict[str, NetnsCounters] = {}

    def starting(self, container_id: str) -> None:
        """A start was requested (``docker start``); the latency clock runs until ``start``."""
        self._start_due[container_id] = trio.current_time()

    def stopping(self, container_id: str) -> None:
        """A stop was requested; the latency clock runs until ``stop``."""
        self._stop_asked[container_id] = trio.current_time()

    def observe(self, action: str, sup: Supervised, *, image: str, labels: Mapping[str, str],
                attributes: Mapping[str, str]) -> None:
        """Called by the Engine for each container event, right after it is published."""
        now = trio.current_time()
        if action == "start":
            self._track(sup, image, labels)
            due = self._start_due.pop(sup.id, None)
            if due is not None:
                self.corral.start_seconds.observe(max(0.0, now - due))
        elif action == "die":
            # Gone from the per-container series at the next scrape, whatever comes next.
            self._untrack(sup.id)
            code = attributes.get("exitCode", "")
            if code.lstrip("-").isdigit():
                self.corral.container_exited(int(code))
        elif action == "restart":
            self.corral.container_restarted(sup.id, sup.name, attributes.get("cause", ""))
            delay = _float(attributes.get("delay"))
            # The start clock starts when the delay is over, not when it began.
            self._start_due[sup.id] = now + delay
        elif action == "stop":
            asked = self._stop_asked.pop(sup.id, None)
            if asked is not None:
                self.corral.stop_seconds.observe(max(0.0, now - asked))
        elif action == "rename":
            tracked = self.containers.tracked().get(sup.id)
            if tracked is not None:
                self.containers.track(TrackedContainer(**{**vars(tracked), "name": sup.name}))
        elif action == "destroy":
            self._untrack(sup.id)
            self.corral.forget_container(sup.id)
            self._start_due.pop(sup.id, None)
            self._stop_asked.pop(sup.id, None)
        if action in ("die", "parked", "stop") and sup.status == "exited":
            self._start_due.pop(sup.id, None)   # no start is coming: a failed start leaves none behind

    def _track(self, sup: Supervised, image: str, labels: Mapping[str, str]) -> None:
        try:
            cgroup = open_cgroup(sup.cgroup, mountinfo=self._mountinfo, self_cgroup=self._self_cgroup)
        except CgroupError as exc:
            log.warning("container %s: no metrics: %s", sup.id[:12], exc)
            return
        started = sup.started_at_ns / 1e9 if sup.started_at_ns else time.time()
        self._close_netns(sup.id)
        try:
            # The init is our child and not yet reaped (its task publishes "die" after
            # waiting), so its PID cannot have been reused.
            network = NetnsCounters.open(sup.pid) if sup.pid else None
        except FileNotFoundError:
            network = None     # exited already (a zombie has no namespaces): its "die" is on the way
        except OSError as exc:
            log.warning("container %s: no network metrics: %s", sup.id[:12], exc)
            network = None
        if network is not None:
            self._netns[sup.id] = network
        self.containers.track(TrackedContainer(id=sup.id, name=sup.name, image=image, cgroup=cgroup,
                                               labels=dict(labels), started_at_s=started,
                                               resources=sup.resources, network=network))

    def _untrack(self, container_id: str) -> None:
        self.containers.untrack(container_id)
        self._close_netns(container_id)

    def _close_netns(self, container_id: str) -> None:
        # Waits for a scrape reading this namespace right now (one netlink dump, well under a ms).
        network = self._netns.pop(container_id, None)
        if network is not None:
            network.close()

    def close(self) -> None:
        """Let go of every namespace still held (the daemon is shutting down)."""
        for container_id in list(self._netns):
            self._close_netns(container_id)


def _float(text: str | None) -> float:
    try:
        value = float(text or 0)
    except ValueError:
        return 0.0
    return value if math.isfinite(value) and value > 0 else 0.0
