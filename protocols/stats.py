"""``docker stats``: the figures the CLI derives from Docker's stats JSON, and how it prints them. Pure.

The stats document is Docker's (``GET /containers/{id}/stats``): ``cpu_stats``
and ``precpu_stats`` (two readings), ``memory_stats``, ``blkio_stats``,
``pids_stats``, ``networks``. The formulas are the docker CLI's
(cli/command/container/stats_helpers.go), so ``corral stats`` and ``docker
stats`` against corral's Docker API print the same numbers:

- CPU % = Δ container CPU time / Δ host CPU time (all CPUs) × online CPUs × 100,
  i.e. the share of one CPU: 200% is two CPUs busy;
- memory = usage - inactive file cache (v1 ``total_inactive_file``, v2
  ``inactive_file``), as a share of the limit;
- network and block I/O are sums over interfaces and devices.

Without container names the set of rows is not fixed: it follows the
daemon's listing (running containers, or all with ``-a``), so containers
started later appear and stopped or removed ones go (``follow_listing``).

Units are go-units': memory in binary units with 4 significant digits
(``BytesSize``), I/O in decimal units with 3 (``HumanSizeWithPrecision``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")
_DECIMAL_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")

TABLE_HEADER = ("CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS")


def _custom_size(fmt: str, size: float, base: float, units: tuple[str, ...]) -> str:
    i = 0
    while size >= base and i < len(units) - 1:
        size /= base
        i += 1
    return fmt % size + units[i]


def bytes_size(size: float) -> str:
    """go-units ``BytesSize``: ``1.5MiB``, ``15.51GiB``, ``0B``."""
    return _custom_size("%.4g", size, 1024.0, _BINARY_UNITS)


def human_size(size: float, precision: int = 3) -> str:
    """go-units ``HumanSizeWithPrecision``: ``1.23MB``, ``0B``."""
    return _custom_size(f"%.{precision}g", size, 1000.0, _DECIMAL_UNITS)


def parse_proc_stat_cpu_ns(text: str, clk_tck: int) -> int:
    """Host CPU time of all CPUs, in ns, from /proc/stat's ``cpu`` line (moby's ``getSystemCPUUsage``).

    The first eight fields (user nice system idle iowait irq softirq steal) are
    summed; guest time is already in user.

    Raises:
        ValueError: no ``cpu`` line.
    """
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            ticks = sum(int(f) for f in fields[1:9])
            return ticks * 1_000_000_000 // clk_tck
    raise ValueError("/proc/stat has no cpu line")


def cpu_percent(doc: Mapping[str, Any]) -> float:
    """The docker CLI's ``calculateCPUPercentUnix`` of a stats document; 0.0 without a previous reading."""
    cpu, pre = doc.get("cpu_stats") or {}, doc.get("precpu_stats") or {}
    if not pre.get("system_cpu_usage"):
        # SPEC: the docker CLI would divide by the host's CPU time since boot here,
        # showing the average since then; no previous reading means no rate yet.
        return 0.0
    usage = (cpu.get("cpu_usage") or {})
    cpu_delta = float(usage.get("total_usage") or 0) - float((pre.get("cpu_usage") or {}).get("total_usage") or 0)
    system_delta = float(cpu.get("system_cpu_usage") or 0) - float(pre.get("system_cpu_usage") or 0)
    online = float(cpu.get("online_cpus") or 0) or float(len(usage.get("percpu_usage") or ()))
    if system_delta > 0.0 and cpu_delta > 0.0:
        return cpu_delta / system_delta * online * 100.0
    return 0.0


def memory_usage(memory_stats: Mapping[str, Any]) -> int:
    """Usage without the inactive file cache (docker CLI ``calculateMemUsageUnixNoCache``)."""
    usage = int(memory_stats.get("usage") or 0)
    stats = memory_stats.get("stats") or {}
    v1 = stats.get("total_inactive_file")
    if v1 is not None and v1 < usage:
        return usage - v1
    v2 = stats.get("inactive_file", 0)
    if v2 < usage:
        return usage - v2
    return usage


def memory_percent(used: float, limit: float) -> float:
    return used / limit * 100.0 if limit else 0.0


def block_io(blkio_stats: Mapping[str, Any]) -> tuple[int, int]:
    """(read, write) bytes summed over devices; ops compared by first letter, as the CLI does."""
    read = write = 0
    for entry in blkio_stats.get("io_service_bytes_recursive") or ():
        op = str(entry.get("op") or "")[:1].lower()
        if op == "r":
            read += int(entry.get("value") or 0)
        elif op == "w":
            write += int(entry.get("value") or 0)
    return read, write


def network_io(networks: Mapping[str, Mapping[str, Any]] | None) -> tuple[int, int]:
    """(received, sent) bytes summed over interfaces; (0, 0) without networks."""
    rx = tx = 0
    for counters in (networks or {}).values():
        rx += int(counters.get("rx_bytes") or 0)
        tx += int(counters.get("tx_bytes") or 0)
    return rx, tx


def stats_row(doc: Mapping[str, Any], *, container: str = "", no_trunc: bool = False) -> dict[str, str]:
    """One line of ``docker stats``, as its formatter's fields (``--format json`` prints this object).

    Args:
        container: what the user named the container by (the ``Container`` field).
    """
    memory = doc.get("memory_stats") or {}
    used = memory_usage(memory)
    limit = int(memory.get("limit") or 0)
    rx, tx = network_io(doc.get("networks"))
    read, write = block_io(doc.get("blkio_stats") or {})
    cid = str(doc.get("id") or "")
    return {
        "BlockIO": f"{human_size(read)} / {human_size(write)}",
        "CPUPerc": f"{cpu_percent(doc):.2f}%",
        "Container": container or cid[:12],
        "ID": cid if no_trunc else cid[:12],
        "MemPerc": f"{memory_percent(used, limit):.2f}%",
        "MemUsage": f"{bytes_size(used)} / {bytes_size(limit)}",
        "Name": str(doc.get("name") or "").lstrip("/"),
        "NetIO": f"{human_size(rx)} / {human_size(tx)}",
        "PIDs": str(int((doc.get("pids_stats") or {}).get("current") or 0)),
    }


def follow_listing(shown: Sequence[str], listed: Sequence[str]) -> tuple[list[str], list[str]]:
    """``docker stats`` without names: which containers to start and to stop following.

    The docker CLI keeps its set with container events (start adds, die
    removes unless ``-a``, destroy removes); comparing with a fresh listing each
    redraw gives the same set and cannot miss an event that came before its
    subscription did.

    Args:
        shown: the containers followed now (ids), in screen order.
        listed: the daemon's listing now (ids).

    Returns:
        ``(added, removed)``: ``added`` in listing order (new rows go at the
        bottom, as docker adds them), ``removed`` in screen order.
    """
    listed_set, shown_set = set(listed), set(shown)
    added = [ref for ref in dict.fromkeys(listed) if ref not in shown_set]
    removed = [ref for ref in shown if ref not in listed_set]
    return added, removed


def row_json(row: Mapping[str, str]) -> str:
    """``--format json``: Go marshals the fields sorted, without spaces."""
    return json.dumps(dict(sorted(row.items())), separators=(",", ":"))


def format_table(rows: Sequence[Mapping[str, str]]) -> list[str]:
    """The default table, aligned as Go's tabwriter does (minwidth 10, padding 3)."""
    cells = [TABLE_HEADER] + [(r["ID"], r["Name"], r["CPUPerc"], r["MemUsage"], r["MemPerc"], r["NetIO"],
                               r["BlockIO"], r["PIDs"]) for r in rows]
    widths = [max(10, *(len(c[i]) + 3 for c in cells)) for i in range(len(TABLE_HEADER) - 1)]
    return ["".join(c.ljust(w) for c, w in zip(line[:-1], widths)) + line[-1] for line in cells]
