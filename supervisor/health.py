"""Health checks: Docker's HEALTHCHECK, run by exec, with its state machine and events.

Rules:

1. The state machine is pure (``HealthState.record``): moby's rules
   (daemon/health.go). A probe that exits 0 makes the container healthy and
   resets the failing streak. Any other result is a failure; while the
   container is still "starting" and inside its start period a failure is not
   counted; otherwise the streak grows, and at ``retries`` it is unhealthy.
   The log keeps the last 5 results.
2. One monitor task per running container with a health check, started on
   the container's ``start`` event and cancelled on its ``die``. It sleeps the
   interval (the start interval while starting inside the start period),
   runs the probe by exec with the timeout (a timed-out probe is killed and
   recorded as exit -1), records it, and publishes ``health_status: STATUS``
   when the status changed.
3. A paused container is not probed (an exec would freeze in its cgroup).

The config merge is Docker's: the container's Test wins unless empty; each
duration or count that is 0 takes the image's; Test ["NONE"] disables it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import trio

from .errors import CorralError, InvalidRequest

if TYPE_CHECKING:
    from .engine import Engine, Entry

log = logging.getLogger("corral.health")

# moby's defaults (daemon/health.go) and limits.
DEFAULT_INTERVAL_S = 30.0
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_START_PERIOD_S = 0.0
DEFAULT_RETRIES = 3
MAX_LOG_ENTRIES = 5
MAX_OUTPUT_BYTES = 4096
STARTING, HEALTHY, UNHEALTHY = "starting", "healthy", "unhealthy"
SHELL = ("/bin/sh", "-c")


@dataclass(frozen=True)
class HealthConfig:
    """A merged, enabled health check. Durations in seconds."""

    test: tuple[str, ...]                       # ("CMD", args...) or ("CMD-SHELL", command)
    interval_s: float = DEFAULT_INTERVAL_S
    timeout_s: float = DEFAULT_TIMEOUT_S
    start_period_s: float = DEFAULT_START_PERIOD_S
    start_interval_s: float = 0.0               # 0: the interval
    retries: int = DEFAULT_RETRIES

    def probe_args(self) -> list[str]:
        """The command an exec runs: CMD's arguments, or CMD-SHELL's line under /bin/sh -c."""
        if self.test[0] == "CMD-SHELL":
            return [*SHELL, " ".join(self.test[1:])]
        return list(self.test[1:])


def merge_healthcheck(container: dict[str, Any] | None, image: dict[str, Any] | None) -> HealthConfig | None:
    """Docker's Config.Healthcheck over the image's HEALTHCHECK -> the check to run, or None.

    Raises:
        InvalidRequest: a malformed Test or a negative value.
    """
    c, i = container or {}, image or {}
    if not isinstance(c, dict) or not isinstance(i, dict):
        raise InvalidRequest("Healthcheck: must be an object")
    test = c.get("Test") or i.get("Test") or []
    if not isinstance(test, list) or not all(isinstance(t, str) for t in test):
        raise InvalidRequest("Healthcheck.Test: must be a list of strings")
    if not test or test[0] == "NONE":
        return None
    if test[0] not in ("CMD", "CMD-SHELL") or len(test) < 2:
        raise InvalidRequest(f"Healthcheck.Test: must be [\"NONE\"], [\"CMD\", args...] or "
                             f"[\"CMD-SHELL\", command], got {test!r}")

    def pick(key: str) -> int:
        value = c.get(key) or i.get(key) or 0
        if not isinstance(value, int) or value < 0:
            raise InvalidRequest(f"Healthcheck.{key}: must be a non-negative integer, got {value!r}")
        return value
    ns = 1e9
    return HealthConfig(
        test=tuple(test), interval_s=pick("Interval") / ns or DEFAULT_INTERVAL_S,
        timeout_s=pick("Timeout") / ns or DEFAULT_TIMEOUT_S,
        start_period_s=pick("StartPeriod") / ns or DEFAULT_START_PERIOD_S,
        start_interval_s=pick("StartInterval") / ns, retries=pick("Retries") or DEFAULT_RETRIES)


@dataclass(frozen=True)
class ProbeResult:
    start_ns: int
    end_ns: int
    exit_code: int
    output: str

    def to_docker(self) -> dict[str, Any]:
        from .engine import _rfc3339
        return {"Start": _rfc3339(self.start_ns), "End": _rfc3339(self.end_ns), "ExitCode": self.exit_code,
                "Output": self.output}


@dataclass(frozen=True)
class HealthState:
    status: str = STARTING
    failing_streak: int = 0
    log: tuple[ProbeResult, ...] = ()

    def record(self, result: ProbeResult, *, retries: int, in_start_period: bool) -> HealthState:
        """The state after ``result`` (rule 1 of this module)."""
        log = (*self.log, result)[-MAX_LOG_ENTRIES:]
        if result.exit_code == 0:
            return HealthState(HEALTHY, 0, log)
        if self.status == STARTING and in_start_period:
            return replace(self, log=log)
        streak = self.failing_streak + 1
        return HealthState(UNHEALTHY if streak >= retries else self.status, streak, log)

    def to_docker(self) -> dict[str, Any]:
        """State.Health of docker inspect."""
        return {"Status": self.status, "FailingStreak": self.failing_streak,
                "Log": [r.to_docker() for r in self.log]}


# probe() -> (exit code, output); raises CorralError when it cannot run.
Probe = Callable[[], Awaitable[tuple[int, str]]]


async def monitor(config: HealthConfig, probe: Probe, on_result: Callable[[HealthState, str | None], Awaitable[None]],
                  *, state: HealthState = HealthState(), started_at: float | None = None,
                  paused: Callable[[], bool] = lambda: False) -> None:
    """Probe forever (until cancelled); ``on_result(state, new_status_or_None)`` after each probe.

    Times are trio's clock, so tests run it under ``MockClock``.
    """
    started_at = trio.current_time() if started_at is None else started_at
    while True:
        in_start = state.status == STARTING and trio.current_time() - started_at < config.start_period_s
        await trio.sleep(config.start_interval_s if in_start and config.start_interval_s else config.interval_s)
        if paused():
            continue
        begin_ns, begin = time.time_ns(), trio.current_time()
        with trio.move_on_after(config.timeout_s) as scope:
            try:
                code, output = await probe()
            except CorralError as exc:
                code, output = -1, str(exc)
        if scope.cancelled_caught:
            code, output = -1, f"Health check exceeded timeout ({_seconds(config.timeout_s)})"
        result = ProbeResult(begin_ns, time.time_ns(), code, output)
        in_start = begin - started_at < config.start_period_s
        old = state.status
        state = state.record(result, retries=config.retries, in_start_period=in_start)
        await on_result(state, state.status if state.status != old else None)


def _seconds(s: float) -> str:
    """Go's Duration.String for whole or fractional seconds: "1s", "500ms", "1.5s"."""
    if s < 1:
        return f"{round(s * 1000)}ms"
    return f"{s:g}s"


@dataclass
class _Watched:
    config: HealthConfig | None = None           # None while it is being read
    state: HealthState = field(default_factory=HealthState)
    scope: trio.CancelScope | None = None


class HealthMonitors:
    """The Engine's health checks: one monitor per running container that has one."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._watched: dict[str, _Watched] = {}
        self._changed = trio.Event()
        # The HEALTHCHECK of each image id started so far (None: it has none). An id names
        # its content, which never changes: read once, not at every start (~0.5 ms of one).
        self._image_checks: dict[str, dict | None] = {}

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def container_event(self, action: str, cid: str, e: Entry | None) -> None:
        """Called by the Engine for start, die and destroy (sync: it only starts or cancels a task)."""
        if action == "start" and e is not None:
            watched = self._watched.get(cid)
            if watched is not None and watched.scope is not None:
                watched.scope.cancel()
            # A (re)start begins again at "starting"; the log stays (moby).
            log = watched.state.log if watched is not None else ()
            self._watched[cid] = new = _Watched(state=HealthState(log=log))
            self.engine._nursery.start_soon(self._run, e, new)
        elif action == "die":
            watched = self._watched.get(cid)
            if watched is not None and watched.scope is not None:
                watched.scope.cancel()
            self._notify()
        elif action == "destroy":
            watched = self._watched.pop(cid, None)
            if watched is not None and watched.scope is not None:
                watched.scope.cancel()

    async def _run(self, e: Entry, watched: _Watched) -> None:
        with trio.CancelScope() as scope:
            watched.scope = scope
            try:
                if e.image_id not in self._image_checks:
                    image = await trio.to_thread.run_sync(self.engine.images.get, e.image_id)
                    self._image_checks[e.image_id] = image.config.extra.get("Healthcheck")
                image_check = self._image_checks[e.image_id]
                watched.config = merge_healthcheck(e.body.get("Healthcheck"), image_check)
            except Exception as exc:       # noqa: BLE001 - a removed image or a bad check: no monitor, logged
                log.warning("container %s: health check not started: %s", e.sup.id[:12], exc)
                watched.config = None
            if watched.config is None:
                self._watched.pop(e.sup.id, None)
                self._notify()
                return
            self._notify()

            async def probe() -> tuple[int, str]:
                return await self.engine.execs.run_probe(e, watched.config.probe_args(), max_output=MAX_OUTPUT_BYTES)

            async def on_result(state: HealthState, changed: str | None) -> None:
                watched.state = state
                if changed is not None:
                    self._notify()
                    await self.engine._publish(f"health_status: {changed}", e.sup, {})
            await monitor(watched.config, probe, on_result, state=watched.state, paused=lambda: e.paused)

    def inspect(self, cid: str) -> dict[str, Any] | None:
        """State.Health for docker inspect; None when the container has no health check (yet)."""
        watched = self._watched.get(cid)
        if watched is None or watched.config is None:
            return None
        return watched.state.to_docker()

    def status(self, cid: str) -> str | None:
        watched = self._watched.get(cid)
        return watched.state.status if watched is not None and watched.config is not None else None

    def ps_suffix(self, cid: str) -> str:
        """What docker ps adds to "Up 3 minutes": " (healthy)", " (health: starting)", " (unhealthy)"."""
        status = self.status(cid)
        if status is None:
            return ""
        return " (health: starting)" if status == STARTING else f" ({status})"

    async def wait_healthy(self, ref: str) -> None:
        """Until the container is healthy (Compose's ``service_healthy``).

        Raises:
            InvalidRequest: it became unhealthy, stopped, or has no health check.
        """
        while True:
            e = self.engine._get(ref)
            name = e.sup.name
            watched = self._watched.get(e.sup.id)
            if watched is not None and watched.config is not None:
                if watched.state.status == HEALTHY:
                    return
                if watched.state.status == UNHEALTHY:
                    raise InvalidRequest(f"dependency failed to start: container {name} is unhealthy")
            if not e.running:
                raise InvalidRequest(f"dependency failed to start: container {name} exited "
                                     f"({e.sup.exit_code}) before it was healthy")
            if watched is None:
                raise InvalidRequest(f"container {name} has no healthcheck configured")
            await self._changed.wait()
