"""``docker stats`` for the Engine: cgroup readings as Docker's stats documents, one a second.

A reading is the container cgroup's counters (``Host.cgroup_stats``, i.e.
``Cgroup.stats()``, the same parser the /metrics collector uses: there is no
second one), the host's CPU time from /proc/stat, and the interface counters
of the init's network namespace (``runtime.net.NetnsCounters``; none when the
container shares ours). ``stats_document`` turns a reading and the one before
it into Docker's JSON (``cpu_stats``/``precpu_stats``...), and the CLI derives
its percentages from that with ``protocols.stats``, as the docker CLI does.

Rules:

1. A stream yields at once (``precpu_stats`` empty, as dockerd's first object),
   then once a second. ``stream=False`` takes two readings a second apart and
   yields one document, so its CPU % is meaningful (dockerd does the same).
2. A stopped container still answers: every counter 0, as dockerd does.
3. ``stats_document`` is pure (tests/unit/supervisor/test_stats.py).
4. A stream ends when its container is removed (dockerd closes its
   publisher then), so a client drops the row instead of showing zeros of a
   container that is gone. It follows the container across stops and starts:
   each reading is of the init running then, its network namespace included.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from protocols.stats import parse_proc_stat_cpu_ns
from runtime.cgroups import CgroupStats

if TYPE_CHECKING:
    from .engine import Engine, Entry

INTERVAL_S = 1.0
_ZERO_TIME = "0001-01-01T00:00:00Z"


@dataclass(frozen=True)
class Reading:
    """What one sample of a container holds; every figure may be missing (None / empty)."""

    time_ns: int
    cgroup: CgroupStats | None = None
    system_cpu_ns: int = 0
    online_cpus: int = 0
    mem_total_bytes: int = 0
    # Interface -> {"rx_bytes", ...}; None: no network namespace of its own (no "networks" key).
    networks: Mapping[str, Mapping[str, int]] | None = None


def _rfc3339(ns: int) -> str:
    if not ns:
        return _ZERO_TIME
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}Z"


def _cpu_stats(r: Reading | None) -> dict[str, Any]:
    if r is None:
        return {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
                "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}
    s = r.cgroup or CgroupStats()
    usage: dict[str, Any] = {
        "total_usage": (s.cpu_usage_usec or 0) * 1000,
        "usage_in_kernelmode": (s.cpu_system_usec or 0) * 1000,
        "usage_in_usermode": (s.cpu_user_usec or 0) * 1000,
    }
    if s.cpu_percpu_usec:
        usage["percpu_usage"] = [u * 1000 for u in s.cpu_percpu_usec]
    return {
        "cpu_usage": usage,
        "system_cpu_usage": r.system_cpu_ns,
        "online_cpus": r.online_cpus,
        "throttling_data": {"periods": s.cpu_nr_periods or 0, "throttled_periods": s.cpu_nr_throttled or 0,
                            "throttled_time": (s.cpu_throttled_usec or 0) * 1000},
    }


def stats_document(cid: str, name: str, r: Reading, pre: Reading | None) -> dict[str, Any]:
    """Docker's stats JSON (API 1.41) from a reading and the previous one (None: the first).

    Units are Docker's: CPU times in ns, memory and I/O in bytes. The memory
    ``limit`` of an unlimited container is the host's memory, as dockerd reports it.
    """
    s = r.cgroup or CgroupStats()
    limit = s.memory_limit_bytes or r.mem_total_bytes
    if r.mem_total_bytes:
        limit = min(limit, r.mem_total_bytes)
    memory: dict[str, Any] = {}
    if s.memory_usage_bytes is not None:
        memory = {"usage": s.memory_usage_bytes, "max_usage": s.memory_max_usage_bytes or 0,
                  "stats": dict(s.memory_stat), "failcnt": s.memory_failcnt or 0, "limit": limit}
    service_bytes, serviced = [], []
    for device, io in sorted(s.io_devices.items()):
        major, _, minor = device.partition(":")
        for op, nbytes, ops in (("read", io.read_bytes, io.read_ops), ("write", io.write_bytes, io.write_ops)):
            service_bytes.append({"major": int(major), "minor": int(minor or 0), "op": op, "value": nbytes})
            serviced.append({"major": int(major), "minor": int(minor or 0), "op": op, "value": ops})
    doc: dict[str, Any] = {
        "read": _rfc3339(r.time_ns),
        "preread": _rfc3339(pre.time_ns) if pre is not None else _ZERO_TIME,
        "id": cid,
        "name": "/" + name,
        "num_procs": 0,                                    # dockerd: Windows only
        "pids_stats": {"current": s.pids_current or 0,
                       **({"limit": s.pids_max} if s.pids_max else {})},
        "blkio_stats": {"io_service_bytes_recursive": service_bytes, "io_serviced_recursive": serviced,
                        "io_queue_recursive": [], "io_service_time_recursive": [], "io_wait_time_recursive": [],
                        "io_merged_recursive": [], "io_time_recursive": [], "sectors_recursive": []},
        "storage_stats": {},
        "cpu_stats": _cpu_stats(r if r.cgroup is not None else None),
        "precpu_stats": _cpu_stats(pre if pre is not None and pre.cgroup is not None else None),
        "memory_stats": memory,
    }
    if r.networks is not None:
        doc["networks"] = {name: dict(counters) for name, counters in sorted(r.networks.items())}
    return doc


# --- reading the host (worker threads) ------------------------------------------------------


def _mem_total(meminfo: str) -> int:
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


class _Sampler:
    """The host-side figures of one container's stream; holds the network namespace of its init open."""

    def __init__(self) -> None:
        self._pid = 0
        self._net = None
        self._net_opened = False

    def host_figures(self, pid: int) -> dict[str, Any]:
        """Blocking: /proc/stat, /proc/meminfo, the interfaces of the namespace of ``pid`` (0: none).

        A new ``pid`` (the container was restarted, or started since) opens its namespace afresh.
        """
        proc = Path("/proc")
        figures: dict[str, Any] = {
            "system_cpu_ns": parse_proc_stat_cpu_ns((proc / "stat").read_text(), os.sysconf("SC_CLK_TCK")),
            "online_cpus": os.sysconf("SC_NPROCESSORS_ONLN"),
            "mem_total_bytes": _mem_total((proc / "meminfo").read_text()),
            "networks": None,
        }
        if pid != self._pid:
            self.close()
            self._pid, self._net_opened = pid, False
        if self._pid and not self._net_opened:
            self._net_opened = True
            from runtime.net import NetnsCounters
            try:
                self._net = NetnsCounters.open(self._pid)
            except OSError:
                self._net = None                    # the init is gone: no networks
        if self._net is not None:
            try:
                links = self._net.read()
            except OSError:
                links = {}
            # Loopback only (no interface of its own): no "networks" key, as dockerd with --network none.
            figures["networks"] = None if not links else {
                name: {"rx_bytes": s.rx_bytes, "rx_packets": s.rx_packets, "rx_errors": s.rx_errors,
                       "rx_dropped": s.rx_dropped, "tx_bytes": s.tx_bytes, "tx_packets": s.tx_packets,
                       "tx_errors": s.tx_errors, "tx_dropped": s.tx_dropped}
                for name, s in links.items()}
        return figures

    def close(self) -> None:
        if self._net is not None:
            self._net.close()
            self._net = None


async def _read(engine: Engine, e: Entry, sampler: _Sampler) -> Reading:
    cgroup = await engine.host.cgroup_stats(e.sup.cgroup) if e.running else None
    figures = await trio.to_thread.run_sync(sampler.host_figures, e.sup.pid if e.running else 0)
    return Reading(time_ns=time.time_ns(), cgroup=cgroup, **figures)


def _removed(engine: Engine, e: Entry) -> bool:
    return engine._containers.get(e.sup.id) is not e


async def container_stats(engine: Engine, ref: str, *, stream: bool = True) -> AsyncIterator[dict[str, Any]]:
    """Docker's stats documents of a container (rules 1, 2 and 4).

    Raises:
        NoSuchContainer.
    """
    e = engine._get(ref)
    sampler = _Sampler()
    try:
        previous = await _read(engine, e, sampler)
        if not stream:
            await trio.sleep(INTERVAL_S)
            reading = await _read(engine, e, sampler)
            yield stats_document(e.sup.id, e.sup.name, reading, previous)
            return
        yield stats_document(e.sup.id, e.sup.name, previous, None)
        while True:
            await trio.sleep(INTERVAL_S)
            if _removed(engine, e):
                return
            reading = await _read(engine, e, sampler)
            yield stats_document(e.sup.id, e.sup.name, reading, previous)
            previous = reading
    finally:
        sampler.close()
