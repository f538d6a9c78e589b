"""stats and top through `corral` on the real kernel (supervisor/stats.py, Engine.container_top).

The stats figures are checked against the container cgroup's own files, read
here directly as the oracle; the daemon reads them through runtime.cgroups.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import time
from pathlib import Path

import anyio
import pytest

from supervisor.client import connect

from ._daemon import TIMEOUT, Daemon, daemon_fixture  # noqa: F401 - the `daemon` fixture
from .conftest import _cgroup_dirs, corral_command, wait_for

pytestmark = pytest.mark.root

_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def _bytes(text: str) -> float:
    """A go-units BytesSize ("30.2MiB") back to bytes."""
    m = re.fullmatch(r"([\d.]+)([KMGT]?i?B)", text)
    assert m, text
    return float(m.group(1)) * _UNITS[m.group(2)]


def _memory_files(cgroup_parent: str, cid: str) -> Path:
    for d in _cgroup_dirs(cgroup_parent):
        if (d / cid / "memory.usage_in_bytes").exists() or (d / cid / "memory.current").exists():
            return d / cid
    raise AssertionError(f"no memory cgroup for {cid} under {cgroup_parent}")


def _working_set(d: Path) -> int:
    """usage - inactive file, from the cgroup's own files (v1 or v2)."""
    stat = dict(line.split() for line in (d / "memory.stat").read_text().splitlines())
    if (d / "memory.usage_in_bytes").exists():
        return int((d / "memory.usage_in_bytes").read_text()) - int(stat["total_inactive_file"])
    return int((d / "memory.current").read_text()) - int(stat["inactive_file"])


def _rows(daemon: Daemon, *args: str) -> dict[str, dict[str, str]]:
    out = daemon.ok("stats", "--no-stream", "--format", "json", *args)
    rows = [json.loads(line) for line in out.splitlines()]
    return {r["Name"]: r for r in rows}


def test_stats_no_stream_matches_the_cgroups_own_figures(daemon: Daemon, cgroup_parent: str) -> None:
    # The shell keeps a 32 MiB string alive, then idles.
    daemon.ok("run", "-d", "--name", "mem", "busybox", "sh", "-c",
              "a=$(head -c 33554432 /dev/zero | tr '\\0' x); touch /ready; while :; do sleep 1; done")
    daemon.ok("run", "-d", "--name", "spin", "busybox", "sh", "-c", "while :; do :; done")
    daemon.ok("create", "--name", "idle", "busybox", "true")
    cid = daemon.inspect("mem")["Id"]
    wait_for(lambda: subprocess.run([*corral_command(), "-H", f"unix://{daemon.socket}", "cp", "mem:/ready", "-"],
                                    capture_output=True, timeout=TIMEOUT).returncode == 0,
             timeout=30, what="the shell to allocate")
    files = _memory_files(cgroup_parent, cid)
    before = _working_set(files)
    rows = _rows(daemon, "mem", "spin")
    after = _working_set(files)
    mem = rows["mem"]
    assert set(mem) == {"BlockIO", "CPUPerc", "Container", "ID", "MemPerc", "MemUsage", "Name", "NetIO", "PIDs"}
    assert mem["Container"] == "mem" and mem["ID"] == cid[:12]
    usage, limit = (_bytes(v) for v in mem["MemUsage"].split(" / "))
    # The string alone is 32 MiB; the figure is the cgroup's own, read within a second of ours
    # (BytesSize rounds to 4 digits).
    assert usage >= 32 << 20
    assert min(before, after) * 0.97 <= usage <= max(before, after) * 1.03, (before, usage, after)
    host_memory = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) * 1024
    assert limit == pytest.approx(host_memory, rel=0.001)           # no limit: the host's memory, as docker
    assert float(mem["MemPerc"].rstrip("%")) == pytest.approx(usage / limit * 100, abs=0.01)
    assert mem["NetIO"] == "0B / 0B"                                 # loopback only
    assert int(mem["PIDs"]) >= 2                                     # sh and its sleep
    # A busy loop uses CPU; a sleeping shell hardly any. (Bounds, not timings: any share above 0.)
    assert float(rows["spin"]["CPUPerc"].rstrip("%")) > 1.0
    assert float(mem["CPUPerc"].rstrip("%")) < float(rows["spin"]["CPUPerc"].rstrip("%"))
    # -a lists the created one too, all zeros; with no names, only running ones are listed.
    everything = _rows(daemon, "-a")
    assert set(everything) == {"mem", "spin", "idle"}
    assert everything["idle"]["MemUsage"] == "0B / 0B" and everything["idle"]["PIDs"] == "0"
    assert set(_rows(daemon)) == {"mem", "spin"}
    # The table: docker's header, one line per container.
    table = daemon.ok("stats", "--no-stream", "mem").splitlines()
    assert re.match(r"CONTAINER ID\s+NAME\s+CPU %\s+MEM USAGE / LIMIT\s+MEM %\s+NET I/O\s+BLOCK I/O\s+PIDS$", table[0])
    assert len(table) == 2 and table[1].startswith(cid[:12] + " ")
    out = daemon.cli("stats", "--no-stream", "nosuch")
    assert out.returncode == 1 and "no such container" in out.stderr


def test_stats_documents_are_dockers_and_stream_every_second(daemon: Daemon) -> None:
    daemon.ok("run", "-d", "--name", "st", "busybox", "sh", "-c", "while :; do :; done")

    async def documents(stream: bool, count: int) -> list[dict]:
        async with connect(daemon.socket) as client, client.stream("container.stats", id="st", stream=stream) as docs:
            out = []
            async for doc in docs:
                out.append(doc)
                if len(out) == count:
                    break
            return out

    (doc,) = anyio.run(documents, False, 1)
    assert {"read", "preread", "id", "name", "pids_stats", "blkio_stats", "cpu_stats", "precpu_stats",
            "memory_stats"} <= set(doc)
    assert doc["name"] == "/st" and doc["id"] == daemon.inspect("st")["Id"]
    cpu, pre = doc["cpu_stats"], doc["precpu_stats"]
    # Two readings: the second later, with more CPU used by the container and the host.
    assert cpu["cpu_usage"]["total_usage"] > pre["cpu_usage"]["total_usage"] > 0
    assert cpu["system_cpu_usage"] > pre["system_cpu_usage"] > 0 and cpu["online_cpus"] >= 1
    assert doc["memory_stats"]["usage"] > 0 and "total_inactive_file" in doc["memory_stats"]["stats"]
    assert doc["pids_stats"]["current"] >= 1 and "networks" not in doc
    # A stream: the first at once with no previous reading, then one a second.
    first, second = anyio.run(documents, True, 2)
    assert first["preread"] == "0001-01-01T00:00:00Z" and second["preread"] == first["read"]
    # The CLI without --no-stream goes on printing until stopped.
    proc = subprocess.Popen([*corral_command(), "-H", f"unix://{daemon.socket}", "stats", "st"],
                            stdout=subprocess.PIPE, text=True)
    try:
        headers = 0
        deadline = time.monotonic() + 30
        while headers < 2 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            headers += line.startswith("CONTAINER ID")
        assert headers == 2
    finally:
        proc.terminate()
        proc.wait(timeout=TIMEOUT)
        proc.stdout.close()


class _StatsScreen:
    """``corral stats ARGS`` into a pipe: every redraw appends one table (its header, then a row per container)."""

    def __init__(self, daemon: Daemon, *args: str) -> None:
        self.process = subprocess.Popen([*corral_command(), "-H", f"unix://{daemon.socket}", "stats", *args],
                                        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self._buffer = b""
        self._table: list[str] | None = None

    def _complete_tables(self):
        """Each table once the next one's header shows it is complete: the set of container names in it."""
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            text = line.decode()
            if text.startswith("CONTAINER ID"):
                if self._table is not None:
                    yield {row.split()[1] for row in self._table}
                self._table = []
            elif self._table is not None and text.strip():
                self._table.append(text)

    def wait_for(self, names: set[str], what: str) -> None:
        """Read redraws until one shows exactly ``names`` (bounded)."""
        deadline = time.monotonic() + TIMEOUT
        seen: list[set[str]] = []
        while time.monotonic() < deadline:
            for shown in self._complete_tables():
                if shown == names:
                    return
                seen.append(shown)
            ready, _, _ = select.select([self.process.stdout], [], [], 0.5)
            if ready:
                data = os.read(self.process.stdout.fileno(), 65536)
                assert data, f"corral stats ended before {what}; tables: {seen[-5:]}"
                self._buffer += data
        raise AssertionError(f"no table showed {sorted(names)} ({what}); the last ones: {seen[-5:]}")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=TIMEOUT)
        self.process.stdout.close()


def test_stats_without_names_follows_containers_that_start_stop_and_go(daemon: Daemon) -> None:
    daemon.ok("run", "-d", "--name", "first", "busybox", "sleep", "1000")
    screen = _StatsScreen(daemon)
    try:
        screen.wait_for({"first"}, "the running container")
        daemon.ok("run", "-d", "--name", "second", "busybox", "sleep", "1000")
        screen.wait_for({"first", "second"}, "a container started after stats began")
        daemon.ok("stop", "-t", "0", "first")
        screen.wait_for({"second"}, "the stopped container to leave the table")
        daemon.ok("rm", "-f", "second")
        screen.wait_for(set(), "the removed container to leave the table")
    finally:
        screen.close()
    # With -a a stopped container stays (all zeros); a new one comes, a removed one goes.
    screen = _StatsScreen(daemon, "-a")
    try:
        screen.wait_for({"first"}, "the stopped container, with -a")
        daemon.ok("create", "--name", "third", "busybox", "true")
        screen.wait_for({"first", "third"}, "a container created after stats -a began")
        daemon.ok("rm", "first")
        screen.wait_for({"third"}, "the removed container to leave the table")
    finally:
        screen.close()


def test_a_stats_stream_ends_when_its_container_is_removed(daemon: Daemon) -> None:
    daemon.ok("run", "-d", "--name", "gone", "busybox", "sleep", "1000")

    async def documents() -> list[dict]:
        out = []
        async with connect(daemon.socket) as client, client.stream("container.stats", id="gone") as docs:
            with anyio.fail_after(TIMEOUT):             # a stream that never ends fails here
                async for doc in docs:
                    out.append(doc)
                    if len(out) == 1:
                        await anyio.to_thread.run_sync(daemon.ok, "rm", "-f", "gone")
        return out

    docs = anyio.run(documents)
    assert docs[0]["name"] == "/gone"


def test_top_shows_the_pid_inside_the_container(daemon: Daemon) -> None:
    daemon.ok("run", "-d", "--name", "topc", "busybox", "sh", "-c", "sleep 1001 & exec sleep 1000")

    def table() -> tuple[list[str], list[list[str]]] | None:
        lines = daemon.ok("top", "topc").splitlines()
        titles = lines[0].split()
        rows = [line.split(None, len(titles) - 1) for line in lines[1:]]
        return (titles, rows) if len(rows) == 2 else None

    titles, rows = wait_for(table, timeout=10, what="both sleeps in top")
    assert titles == ["UID", "PID", "CPID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    by_cmd = {r[-1]: r for r in rows}
    assert by_cmd["sleep 1000"][2] == "1"
    child = by_cmd["sleep 1001"]
    # The oracle: the kernel's own NSpid line of that host PID.
    nspid = next(line for line in Path(f"/proc/{child[1]}/status").read_text().splitlines()
                 if line.startswith("NSpid:")).split()
    assert nspid[1] == child[1] and child[2] == nspid[-1] != child[1]
