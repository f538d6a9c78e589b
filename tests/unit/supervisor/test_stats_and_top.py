"""supervisor/stats.py's document and engine.py's top helpers, pure."""

from __future__ import annotations

from pathlib import Path

from protocols.stats import cpu_percent, stats_row
from runtime.cgroups import CgroupStats, IoDeviceStats
from supervisor.engine import parse_nspid, with_container_pids
from supervisor.stats import Reading, stats_document


def _reading(t: int, usage_usec: int, system_ns: int, **kw) -> Reading:
    cg = CgroupStats(cpu_usage_usec=usage_usec, cpu_percpu_usec=(usage_usec, 0), cpu_user_usec=usage_usec // 2,
                     memory_usage_bytes=50 << 20, memory_limit_bytes=kw.pop("limit", None),
                     memory_stat={"total_inactive_file": 10 << 20}, pids_current=4,
                     io_devices={"8:0": IoDeviceStats(read_bytes=1000, write_bytes=2000, read_ops=1, write_ops=2)})
    return Reading(time_ns=t, cgroup=cg, system_cpu_ns=system_ns, online_cpus=2, mem_total_bytes=1 << 30, **kw)


def test_stats_document_is_dockers_shape() -> None:
    pre = _reading(1_000_000_000, 1_000_000, 10_000_000_000)
    now = _reading(2_000_000_000, 1_250_000, 12_000_000_000,
                   networks={"eth0": {"rx_bytes": 10, "tx_bytes": 20}}, limit=100 << 20)
    doc = stats_document("c" * 64, "web", now, pre)
    assert doc["id"] == "c" * 64 and doc["name"] == "/web"
    assert doc["read"] == "1970-01-01T00:00:02.000000000Z" and doc["preread"] == "1970-01-01T00:00:01.000000000Z"
    assert doc["cpu_stats"]["cpu_usage"]["total_usage"] == 1_250_000_000              # ns
    assert doc["cpu_stats"]["cpu_usage"]["percpu_usage"] == [1_250_000_000, 0]
    assert doc["precpu_stats"]["cpu_usage"]["total_usage"] == 1_000_000_000
    assert doc["memory_stats"]["limit"] == 100 << 20
    assert doc["pids_stats"] == {"current": 4}
    assert {"major": 8, "minor": 0, "op": "write", "value": 2000} in doc["blkio_stats"]["io_service_bytes_recursive"]
    assert doc["networks"] == {"eth0": {"rx_bytes": 10, "tx_bytes": 20}}
    # 0.25 s of CPU over 2 s of host CPU on 2 CPUs: 25 % of one CPU.
    assert cpu_percent(doc) == 25.0
    row = stats_row(doc)
    assert row["MemUsage"] == "40MiB / 100MiB" and row["MemPerc"] == "40.00%"
    assert row["BlockIO"] == "1kB / 2kB" and row["NetIO"] == "10B / 20B" and row["PIDs"] == "4"


def test_unlimited_memory_is_the_hosts_and_no_namespace_means_no_networks() -> None:
    doc = stats_document("c" * 64, "web", _reading(1, 1, 1), None)
    assert doc["memory_stats"]["limit"] == 1 << 30
    assert "networks" not in doc and doc["preread"] == "0001-01-01T00:00:00Z"
    assert cpu_percent(doc) == 0.0


def test_a_stopped_container_reads_as_zeros() -> None:
    doc = stats_document("c" * 64, "web", Reading(time_ns=5, system_cpu_ns=9, online_cpus=2), None)
    assert doc["memory_stats"] == {} and doc["pids_stats"] == {"current": 0}
    assert stats_row(doc)["MemUsage"] == "0B / 0B" and stats_row(doc)["CPUPerc"] == "0.00%"


def test_nspid_is_the_last_field() -> None:
    assert parse_nspid("Name:\tsleep\nNSpid:\t4242\t7\nPPid:\t1\n") == "7"
    assert parse_nspid("NSpid:\t12\n") == "12"
    assert parse_nspid("Name:\tx\n") == "-"


def test_top_gets_a_cpid_column_after_pid(tmp_path: Path) -> None:
    (tmp_path / "100").mkdir()
    (tmp_path / "100/status").write_text("NSpid:\t100\t1\n")
    titles, rows = with_container_pids(["UID", "PID", "CMD"], [["root", "100", "sleep 1"], ["root", "101", "gone"]],
                                       proc=tmp_path)
    assert titles == ["UID", "PID", "CPID", "CMD"]
    assert rows == [["root", "100", "1", "sleep 1"], ["root", "101", "-", "gone"]]
