"""Per-container cgroup counters under cAdvisor's metric names.

Rules this module lives by:

1. Told, not asking. The supervisor calls ``track`` when a container starts
   and ``untrack`` when it stops; the collector never looks containers up.
2. Stateless between scrapes. ``collect`` reads every tracked cgroup through
   ``runtime.cgroups`` (``Cgroup.stats()``, ``Cgroup.pids()``) at scrape time
   and keeps nothing; there is no second parser of cgroup files here.
3. ``collect`` runs on the scrape thread while ``track``/``untrack`` run on the
   event loop, so the tracked dict is replaced, never mutated: a scrape
   iterates over one consistent snapshot, with no lock.
4. Names, types, units and label names are cAdvisor's, so existing dashboards
   and alerts work unchanged. A figure cAdvisor has no name for is not
   invented here (corral's own metrics live in ``_corral.py``).
5. A cgroup that vanished between ``track`` and the scrape is skipped: its
   series disappear in that scrape, not one later.

Rejected: a background poller caching stats between scrapes (cAdvisor's
housekeeping) -- it costs CPU with nobody scraping, serves stale values, and
needs its own lifetime; reading at scrape time is cheap (a few small files per
container) and always current. Rejected as well: prometheus_client's
``Gauge``/``Counter`` objects per container, which hold state and leak series
unless every exit remembers to ``remove`` them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from runtime.cgroups import Cgroup, CgroupStats, Resources, cpu_weight_to_shares
from runtime.devices import BlockDeviceNames
from runtime.errors import CgroupError
from runtime.net import LinkStats

BASE_LABELS = ("id", "name", "image")
# cAdvisor's prefix for container labels turned into metric labels (--store_container_labels).
CONTAINER_LABEL_PREFIX = "container_label_"
# The kernel's defaults when nothing was asked for: CFS period 100 ms, cpu.shares 1024
# (v2 cpu.weight 100 maps onto it). cAdvisor reads the files, which hold these values.
DEFAULT_CPU_PERIOD_USEC = 100_000
DEFAULT_CPU_SHARES = 1024
_USEC_PER_S = 1_000_000   # divide, not multiply by 1e-6: 550000 usec is 0.55 s, not 0.5499999999999999
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


class NetworkCounters(Protocol):
    """A container's network namespace, as ``runtime.net.NetnsCounters`` reads it."""

    def read(self) -> Mapping[str, LinkStats]: ...


@dataclass(frozen=True)
class TrackedContainer:
    """What the supervisor tells the collector about one running container.

    Attributes:
        id: The full container id (cAdvisor's ``id`` label is the cgroup path;
            Docker dashboards key on ``name``, and ``id`` only needs to be unique).
        name: The container's name, without Docker's leading ``/``.
        image: The image as the user named it.
        cgroup: The container's cgroup, already opened (never created here).
        labels: The container's labels; only those allowed by name are exported.
        started_at_s: Unix time the current run started (``container_start_time_seconds``).
        resources: The limits the container was started with. cgroup stats
            carry the memory and pids limits the kernel enforces, but not the
            CPU quota, period and weight, so those spec values come from here.
        network: The container's network namespace counters; None when it has
            none of its own (host network) or it could not be opened.
    """

    id: str
    name: str
    image: str
    cgroup: Cgroup
    labels: Mapping[str, str] = field(default_factory=dict)
    started_at_s: float = 0.0
    resources: Resources = field(default_factory=Resources)
    network: NetworkCounters | None = None


def container_label_name(label: str) -> str:
    """The metric label name cAdvisor gives a container label: ``com.example.tier`` ->
    ``container_label_com_example_tier`` (every character outside ``[a-zA-Z0-9_]``
    becomes ``_``)."""
    return CONTAINER_LABEL_PREFIX + _INVALID_LABEL_CHARS.sub("_", label)


class CgroupCollector(Collector):
    """cAdvisor's ``container_*`` metrics for every tracked container, read at scrape time.

    Args:
        allowed_labels: Container labels exported as ``container_label_<name>``
            metric labels. Nothing else is exported: every label value is a new
            series, so cardinality stays the operator's choice. A container
            without an allowed label gets ``""`` for it (one label set per family).
        percpu: Export ``container_cpu_usage_seconds_total`` per CPU
            (``cpu="cpu00"``...) where the cgroup has per-CPU figures (v1
            ``cpuacct.usage_percpu``; v2 has none). Off by default, as in
            cAdvisor since 0.38 (``percpu`` is in its ``--disable_metrics``
            default): the series are one per CPU per container. Off, or where
            unavailable, the single series is ``cpu="total"``.
        clock: Unix time now, for ``container_last_seen`` (tests pass a fixed one).
        device_name: ``MAJ:MIN`` -> the ``device`` label of block I/O series
            (cAdvisor's ``/dev/sda``), cached across scrapes.

    Raises:
        ValueError: Two allowed labels map onto the same metric label name.
    """

    def __init__(self, *, allowed_labels: Iterable[str] = (), percpu: bool = False,
                 clock: Callable[[], float] = time.time,
                 device_name: Callable[[str], str] | None = None) -> None:
        allowed = tuple(dict.fromkeys(allowed_labels))
        names = [container_label_name(label) for label in allowed]
        if len(set(names)) != len(names):
            raise ValueError(f"allowed container labels {allowed!r} collide as metric label names {names!r}")
        self._allowed = allowed
        self._label_names = (*BASE_LABELS, *names)
        self._percpu = percpu
        self._clock = clock
        self._device_name = device_name or BlockDeviceNames()
        self._tracked: Mapping[str, TrackedContainer] = MappingProxyType({})

    def track(self, container: TrackedContainer) -> None:
        """Export ``container`` from the next scrape on; replaces an entry with the same id."""
        # Replace, don't mutate: collect() may be iterating on the scrape thread (rule 3).
        self._tracked = MappingProxyType({**self._tracked, container.id: container})

    def untrack(self, container_id: str) -> None:
        """Stop exporting the container; unknown ids are ignored (a stop after a failed start)."""
        if container_id in self._tracked:
            self._tracked = MappingProxyType({k: v for k, v in self._tracked.items() if k != container_id})

    def tracked(self) -> Mapping[str, TrackedContainer]:
        """The current snapshot, read-only."""
        return self._tracked

    def describe(self) -> Iterator[Metric]:
        # Without describe(), registering would call collect() once to learn the
        # names, reading every cgroup; the families are known up front.
        yield from _Families(self._label_names).all()

    def collect(self) -> Iterator[Metric]:
        families = _Families(self._label_names)
        now = self._clock()
        for c in self._tracked.values():   # one snapshot for the whole scrape (rule 3)
            try:
                processes = len(c.cgroup.pids())
                stats = c.cgroup.stats()
            except CgroupError:
                continue   # removed since track() (rule 5)
            try:
                links = c.network.read() if c.network is not None else {}
            except OSError:
                links = {}   # the namespace went with its container: its cgroup figures still count
            labels = [c.id, c.name, c.image, *(str(c.labels.get(k, "")) for k in self._allowed)]
            families.add(labels, c, stats, processes, now, percpu=self._percpu, device_name=self._device_name,
                         links=links)
        yield from families.all()


class _Families:
    """One scrape's metric families; ``add`` puts one container's samples in them."""

    def __init__(self, label_names: tuple[str, ...]) -> None:
        names = list(label_names)
        self._label_names = names

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, labels=[*names, *extra])

        def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=[*names, *extra])

        self.cpu_usage = counter("container_cpu_usage_seconds_total", "Cumulative CPU time consumed, in seconds.",
                                 ("cpu",))
        self.cpu_user = counter("container_cpu_user_seconds_total", "Cumulative user CPU time consumed, in seconds.")
        self.cpu_system = counter("container_cpu_system_seconds_total",
                                  "Cumulative system CPU time consumed, in seconds.")
        self.cfs_periods = counter("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.")
        self.cfs_throttled_periods = counter("container_cpu_cfs_throttled_periods_total",
                                             "Number of throttled period intervals.")
        self.cfs_throttled_seconds = counter("container_cpu_cfs_throttled_seconds_total",
                                             "Total time duration the container has been throttled, in seconds.")
        self.memory_usage = gauge("container_memory_usage_bytes",
                                  "Current memory usage in bytes, including all memory regardless of when it was "
                                  "accessed.")
        self.memory_working_set = gauge("container_memory_working_set_bytes",
                                        "Current working set in bytes: usage minus inactive file cache, never below 0.")
        self.memory_rss = gauge("container_memory_rss", "Size of RSS (anonymous memory) in bytes.")
        self.memory_cache = gauge("container_memory_cache", "Number of bytes of page cache memory.")
        self.memory_swap = gauge("container_memory_swap", "Container swap usage in bytes.")
        self.memory_max_usage = gauge("container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes.")
        # SPEC: cAdvisor types container_memory_failcnt a counter but its name has
        # no _total. The 0.0.4 text format would carry that, OpenMetrics cannot
        # (a counter's samples must end in _total, so the stored name would
        # change and dashboards break). We keep the name and say "unknown":
        # PromQL treats the series the same, and the name is what dashboards use.
        self.memory_failcnt = Metric("container_memory_failcnt",
                                     "Number of memory usage hits limits.", "unknown")
        self.oom_events = counter("container_oom_events_total",
                                  "Count of out of memory kills in the container's cgroup (its own oom_kill counter).")
        self.processes = gauge("container_processes", "Number of processes running inside the container.")
        self.threads = gauge("container_threads", "Number of threads running inside the container.")
        self.threads_max = gauge("container_threads_max",
                                 "Maximum number of threads allowed inside the container, infinity if value is zero.")
        self.fs_reads_bytes = counter("container_fs_reads_bytes_total", "Cumulative count of bytes read.", ("device",))
        self.fs_writes_bytes = counter("container_fs_writes_bytes_total", "Cumulative count of bytes written.",
                                       ("device",))
        self.fs_reads = counter("container_fs_reads_total", "Cumulative count of reads completed.", ("device",))
        self.fs_writes = counter("container_fs_writes_total", "Cumulative count of writes completed.", ("device",))
        self.net_rx_bytes = counter("container_network_receive_bytes_total",
                                    "Cumulative count of bytes received", ("interface",))
        self.net_rx_packets = counter("container_network_receive_packets_total",
                                      "Cumulative count of packets received", ("interface",))
        self.net_rx_errors = counter("container_network_receive_errors_total",
                                     "Cumulative count of errors encountered while receiving", ("interface",))
        self.net_rx_dropped = counter("container_network_receive_packets_dropped_total",
                                      "Cumulative count of packets dropped while receiving", ("interface",))
        self.net_tx_bytes = counter("container_network_transmit_bytes_total",
                                    "Cumulative count of bytes transmitted", ("interface",))
        self.net_tx_packets = counter("container_network_transmit_packets_total",
                                      "Cumulative count of packets transmitted", ("interface",))
        self.net_tx_errors = counter("container_network_transmit_errors_total",
                                     "Cumulative count of errors encountered while transmitting", ("interface",))
        self.net_tx_dropped = counter("container_network_transmit_packets_dropped_total",
                                      "Cumulative count of packets dropped while transmitting", ("interface",))
        self.start_time = gauge("container_start_time_seconds", "Start time of the container since unix epoch in "
                                                                "seconds.")
        self.last_seen = gauge("container_last_seen", "Last time a container was seen by the exporter.")
        self.spec_memory_limit = gauge("container_spec_memory_limit_bytes",
                                       "Memory limit for the container, in bytes; 0 when unlimited.")
        self.spec_cpu_quota = gauge("container_spec_cpu_quota", "CPU quota of the container, in microseconds per "
                                                                "period.")
        self.spec_cpu_period = gauge("container_spec_cpu_period", "CPU period of the container, in microseconds.")
        self.spec_cpu_shares = gauge("container_spec_cpu_shares", "CPU share of the container (v1 cpu.shares units).")

    def all(self) -> Iterator[Metric]:
        return iter(v for v in vars(self).values() if isinstance(v, Metric))

    def add(self, labels: list[str], c: TrackedContainer, s: CgroupStats, processes: int, now: float, *,
            percpu: bool, device_name: Callable[[str], str], links: Mapping[str, LinkStats]) -> None:
        # Every field may be None (controller absent, file missing on this kernel):
        # a figure we do not have is left out, never reported as 0.
        if percpu and s.cpu_percpu_usec:
            for i, usec in enumerate(s.cpu_percpu_usec):
                self.cpu_usage.add_metric([*labels, f"cpu{i:02d}"], usec / _USEC_PER_S)   # cAdvisor's "cpu%02d"
        elif s.cpu_usage_usec is not None:
            self.cpu_usage.add_metric([*labels, "total"], s.cpu_usage_usec / _USEC_PER_S)
        _add_usec(self.cpu_user, labels, s.cpu_user_usec)
        _add_usec(self.cpu_system, labels, s.cpu_system_usec)
        _add(self.cfs_periods, labels, s.cpu_nr_periods)
        _add(self.cfs_throttled_periods, labels, s.cpu_nr_throttled)
        _add_usec(self.cfs_throttled_seconds, labels, s.cpu_throttled_usec)

        _add(self.memory_usage, labels, s.memory_usage_bytes)
        # runtime computes it as cAdvisor does (usage - inactive_file, floored at 0).
        _add(self.memory_working_set, labels, s.memory_working_set_bytes)
        _add(self.memory_rss, labels, s.memory_rss_bytes)
        _add(self.memory_cache, labels, s.memory_cache_bytes)
        _add(self.memory_swap, labels, s.swap_usage_bytes)
        _add(self.memory_max_usage, labels, s.memory_max_usage_bytes)
        if s.memory_failcnt is not None:
            self.memory_failcnt.add_sample("container_memory_failcnt", dict(zip(self._label_names, labels)),
                                           float(s.memory_failcnt))
        # The cgroup's own kill counter (v2 memory.events oom_kill, v1
        # memory.oom_control oom_kill), not the kernel log cAdvisor scans.
        _add(self.oom_events, labels, s.oom_kill_count)

        self.processes.add_metric(labels, processes)
        # pids.current counts tasks, i.e. threads: each thread holds a pid.
        _add(self.threads, labels, s.pids_current)
        if s.pids_current is not None:
            self.threads_max.add_metric(labels, s.pids_max or 0)   # cAdvisor: 0 is unlimited

        for device, io in sorted(s.io_devices.items()):
            # io.stat / blkio name devices "MAJ:MIN"; cAdvisor's label is the /dev name.
            dev = [*labels, device_name(device)]
            self.fs_reads_bytes.add_metric(dev, io.read_bytes)
            self.fs_writes_bytes.add_metric(dev, io.write_bytes)
            self.fs_reads.add_metric(dev, io.read_ops)
            self.fs_writes.add_metric(dev, io.write_ops)

        for interface, link in sorted(links.items()):
            net = [*labels, interface]
            self.net_rx_bytes.add_metric(net, link.rx_bytes)
            self.net_rx_packets.add_metric(net, link.rx_packets)
            self.net_rx_errors.add_metric(net, link.rx_errors)
            self.net_rx_dropped.add_metric(net, link.rx_dropped)
            self.net_tx_bytes.add_metric(net, link.tx_bytes)
            self.net_tx_packets.add_metric(net, link.tx_packets)
            self.net_tx_errors.add_metric(net, link.tx_errors)
            self.net_tx_dropped.add_metric(net, link.tx_dropped)

        if c.started_at_s:
            self.start_time.add_metric(labels, c.started_at_s)
        self.last_seen.add_metric(labels, now)

        if s.memory_usage_bytes is not None:
            # The limit the kernel enforces, read back from the cgroup; None is
            # unlimited, which cAdvisor (and the kubelet's dashboards) show as 0.
            self.spec_memory_limit.add_metric(labels, s.memory_limit_bytes or 0)
        r = c.resources
        if r.cpu_quota_usec is not None:
            # cAdvisor exports quota and period only for a container that has a quota.
            self.spec_cpu_quota.add_metric(labels, r.cpu_quota_usec)
            self.spec_cpu_period.add_metric(labels, r.cpu_period_usec or DEFAULT_CPU_PERIOD_USEC)
        shares = cpu_weight_to_shares(r.cpu_weight) if r.cpu_weight is not None else DEFAULT_CPU_SHARES
        self.spec_cpu_shares.add_metric(labels, shares)


def _add(family: CounterMetricFamily | GaugeMetricFamily, labels: list[str], value: int | None) -> None:
    if value is not None:
        family.add_metric(labels, value)


def _add_usec(family: CounterMetricFamily | GaugeMetricFamily, labels: list[str], usec: int | None) -> None:
    if usec is not None:
        family.add_metric(labels, usec / _USEC_PER_S)
