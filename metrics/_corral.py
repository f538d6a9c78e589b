"""corral's own metrics: what the supervisor knows and cAdvisor cannot.

Two kinds, by where the truth lives:

- Things that happen (a restart, an exit, a start taking 80 ms) are counted
  when they happen: ``CorralMetrics`` holds prometheus_client ``Counter`` and
  ``Histogram`` objects that the supervisor updates as it publishes events.
- Things that *are* (how many containers run, subscribers, journal size) are
  read at scrape time by ``SupervisorCollector`` through callables the
  supervisor hands over, so they never drift from the Engine's records.

Rules: series named by a container (restarts) are removed with
``forget_container`` when the container is destroyed, so 10,000 containers
coming and going leave no series behind. Every other label has a bounded set
of values (reasons are a fixed vocabulary, exit codes are 0..255).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Why a restart happened, bounded: the task's free-text cause would make one
# series per distinct error message.
RESTART_REASONS = ("exit", "signal", "oom", "start_failed")
# Start: from the request (or the end of the restart delay) to the init having
# exec'd; stop: from the request to the exit being recorded, grace included.
START_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STOP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# How late the event loop wakes a task that slept: anything but the first bucket
# means something held the loop (a blocking call, a long synchronous step).
LOOP_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def restart_reason(cause: str) -> str:
    """Map the task's restart cause (``oom``, ``start failed: ...``, ``exit status 1``,
    ``killed by signal SIGKILL``) onto ``RESTART_REASONS``."""
    if cause == "oom":
        return "oom"
    if cause.startswith("start failed"):
        return "start_failed"
    if cause.startswith("killed by signal"):
        return "signal"
    return "exit"


class CorralMetrics:
    """Counters and histograms the supervisor updates as things happen.

    Args:
        registry: The daemon's private registry (never the global one: tests
            and several daemons in one process must not share series).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.restarts = Counter("corral_container_restarts_total", "Restarts by the restart policy, by container "
                                "and reason.", ["id", "name", "reason"], registry=registry)
        self.exits = Counter("corral_container_exits_total", "Container exits by exit status (128+N: signal N).",
                             ["code"], registry=registry)
        self.start_seconds = Histogram("corral_container_start_duration_seconds", "Time from a start request (or "
                                       "the end of a restart delay) until the container runs.",
                                       buckets=START_BUCKETS, registry=registry)
        self.stop_seconds = Histogram("corral_container_stop_duration_seconds", "Time from a stop request until "
                                      "the container's exit is recorded.", buckets=STOP_BUCKETS, registry=registry)
        self.loop_lag_seconds = Histogram("corral_event_loop_lag_seconds", "How much later than asked the "
                                          "daemon's event loop woke a task that slept (sampled every 0.25 s): "
                                          "the longest the loop was held by anything.",
                                          buckets=LOOP_LAG_BUCKETS, registry=registry)
        self.image_pulls = Counter("corral_image_pulls_total", "Image pulls, by result.", ["result"],
                                   registry=registry)
        self.image_pull_bytes = Counter("corral_image_pull_bytes_total", "Blob bytes downloaded by image pulls "
                                        "(blobs already in the store are not downloaded again).", registry=registry)
        for result in ("success", "failure"):
            self.image_pulls.labels(result)         # both series from the start, at 0
        self._restart_labels: dict[str, set[tuple[str, str, str]]] = {}

    def container_restarted(self, container_id: str, name: str, cause: str) -> None:
        labels = (container_id, name, restart_reason(cause))
        self._restart_labels.setdefault(container_id, set()).add(labels)
        self.restarts.labels(*labels).inc()

    def image_pulled(self, downloaded_bytes: int) -> None:
        self.image_pulls.labels("success").inc()
        self.image_pull_bytes.inc(downloaded_bytes)

    def image_pull_failed(self) -> None:
        self.image_pulls.labels("failure").inc()

    def container_exited(self, exit_code: int) -> None:
        self.exits.labels(str(exit_code)).inc()

    def forget_container(self, container_id: str) -> None:
        """Drop the series named by a destroyed container (every name it had)."""
        for labels in self._restart_labels.pop(container_id, ()):
            try:
                self.restarts.remove(*labels)
            except KeyError:
                pass


class SupervisorCollector(Collector):
    """The supervisor's state, read at scrape time through callables (on the scrape thread).

    Args:
        states: Container count per state (``created``, ``running``...); every
            state in ``all_states`` is exported, 0 when absent, so a state that
            empties shows 0 instead of vanishing.
        all_states: The states to always export.
        events_total: Events emitted since the journal began (its last seq).
        subscribers: Live event subscribers.
        journal_events: Events kept in the journal now.
        start_time_s: Unix time the daemon started.
        version: corral's version, for ``corral_build_info``.
    """

    def __init__(self, *, states: Callable[[], Mapping[str, int]], all_states: tuple[str, ...],
                 events_total: Callable[[], int], subscribers: Callable[[], int],
                 journal_events: Callable[[], int], start_time_s: float, version: str) -> None:
        self._states = states
        self._all_states = all_states
        self._events_total = events_total
        self._subscribers = subscribers
        self._journal_events = journal_events
        self._start_time_s = start_time_s
        self._version = version

    def collect(self) -> Iterator[Metric]:
        counts = self._states()
        containers = GaugeMetricFamily("corral_containers", "Containers by state.", labels=["state"])
        for state in sorted({*self._all_states, *counts}):
            containers.add_metric([state], counts.get(state, 0))
        yield containers
        yield CounterMetricFamily("corral_events_total", "Events emitted (journaled and fanned out) since the "
                                  "journal was created.", value=self._events_total())
        yield GaugeMetricFamily("corral_event_subscribers", "Live event subscribers.", value=self._subscribers())
        yield GaugeMetricFamily("corral_journal_events", "Events kept in the journal.", value=self._journal_events())
        yield GaugeMetricFamily("corral_daemon_start_time_seconds", "Start time of the daemon since unix epoch in "
                                "seconds.", value=self._start_time_s)
        info = GaugeMetricFamily("corral_build_info", "corral's version; always 1.", labels=["version"])
        info.add_metric([self._version], 1)
        yield info
