"""protocols/stats.py: the docker CLI's stats figures and units, pure."""

from __future__ import annotations

import json

import pytest

from protocols import stats


@pytest.mark.parametrize(("size", "text"), [
    (0, "0B"), (1023, "1023B"), (1024, "1KiB"), (1536, "1.5KiB"), (204 * 1024, "204KiB"),
    (25_270_000_000, "23.53GiB"), (1024 ** 3, "1GiB"),
])
def test_bytes_size_is_go_units_binary(size: int, text: str) -> None:
    assert stats.bytes_size(size) == text


@pytest.mark.parametrize(("size", "text"), [
    (0, "0B"), (999, "999B"), (1000, "1kB"), (1234, "1.23kB"), (4_096_000, "4.1MB"), (12_345_678_901, "12.3GB"),
])
def test_human_size_is_go_units_decimal_with_three_digits(size: int, text: str) -> None:
    assert stats.human_size(size) == text


def test_proc_stat_cpu_line_in_ns() -> None:
    text = "cpu  100 5 50 1000 10 1 2 3 7 0\ncpu0 50 2 25 500 5 0 1 1 0 0\n"
    # user..steal = 100+5+50+1000+10+1+2+3; guest (7) is already in user.
    assert stats.parse_proc_stat_cpu_ns(text, 100) == 1171 * 10_000_000
    with pytest.raises(ValueError):
        stats.parse_proc_stat_cpu_ns("intr 1\n", 100)


def _doc(total: int, pre_total: int, system: int, pre_system: int, online: int = 2) -> dict:
    return {"cpu_stats": {"cpu_usage": {"total_usage": total, "percpu_usage": [1, 2, 3, 4]},
                          "system_cpu_usage": system, "online_cpus": online},
            "precpu_stats": {"cpu_usage": {"total_usage": pre_total}, "system_cpu_usage": pre_system}}


def test_cpu_percent_is_the_share_of_one_cpu() -> None:
    # 0.5 s of CPU while the host's 2 CPUs ran 2 s in all (1 s wall): 50% of one CPU.
    assert stats.cpu_percent(_doc(1_500_000_000, 1_000_000_000, 12_000_000_000, 10_000_000_000)) == 50.0
    # Two CPUs busy: 200%.
    assert stats.cpu_percent(_doc(3_000_000_000, 1_000_000_000, 3_000_000_000, 1_000_000_000)) == 200.0
    # online_cpus 0: the number of per-CPU figures counts instead (docker's fallback).
    assert stats.cpu_percent(_doc(2_000, 1_000, 8_000, 4_000, online=0)) == 100.0
    # No previous reading, or no progress: 0.
    assert stats.cpu_percent({"cpu_stats": {"cpu_usage": {"total_usage": 5}, "system_cpu_usage": 5}}) == 0.0
    assert stats.cpu_percent(_doc(10, 10, 20, 10)) == 0.0


def test_memory_usage_leaves_out_inactive_file_cache() -> None:
    v1 = {"usage": 10_000, "stats": {"total_inactive_file": 3_000, "inactive_file": 1}}
    v2 = {"usage": 10_000, "stats": {"inactive_file": 4_000}}
    assert stats.memory_usage(v1) == 7_000
    assert stats.memory_usage(v2) == 6_000
    assert stats.memory_usage({"usage": 100, "stats": {"total_inactive_file": 500}}) == 100
    assert stats.memory_usage({}) == 0
    assert stats.memory_percent(7_000, 70_000) == 10.0 and stats.memory_percent(1, 0) == 0.0


def test_io_sums() -> None:
    blkio = {"io_service_bytes_recursive": [
        {"major": 8, "minor": 0, "op": "Read", "value": 100}, {"major": 8, "minor": 0, "op": "write", "value": 7},
        {"major": 8, "minor": 16, "op": "read", "value": 1}, {"major": 8, "minor": 0, "op": "Total", "value": 107},
        {"major": 8, "minor": 0, "op": "", "value": 9}]}
    assert stats.block_io(blkio) == (101, 7)
    assert stats.network_io({"eth0": {"rx_bytes": 5, "tx_bytes": 6}, "eth1": {"rx_bytes": 1, "tx_bytes": 0}}) == (6, 6)
    assert stats.network_io(None) == (0, 0)


def test_a_row_and_the_table() -> None:
    doc = {"id": "a" * 64, "name": "/web", "pids_stats": {"current": 3},
           "memory_stats": {"usage": 3 * 1024 * 1024, "limit": 64 * 1024 * 1024, "stats": {"total_inactive_file": 0}},
           "blkio_stats": {"io_service_bytes_recursive": [{"op": "Read", "value": 4096}]},
           **_doc(1_500_000_000, 1_000_000_000, 12_000_000_000, 10_000_000_000)}
    row = stats.stats_row(doc, container="web")
    assert row == {"BlockIO": "4.1kB / 0B", "CPUPerc": "50.00%", "Container": "web", "ID": "a" * 12,
                   "MemPerc": "4.69%", "MemUsage": "3MiB / 64MiB", "Name": "web", "NetIO": "0B / 0B", "PIDs": "3"}
    assert stats.stats_row(doc, no_trunc=True)["ID"] == "a" * 64
    assert list(json.loads(stats.row_json(row))) == sorted(row)
    header, line = stats.format_table([row])
    assert header.startswith("CONTAINER ID   NAME      CPU %     MEM USAGE / LIMIT   MEM %     NET I/O   ")
    assert header.endswith("BLOCK I/O    PIDS")
    assert line[header.index("MEM USAGE"):].startswith("3MiB / 64MiB ")
    assert line[header.index("PIDS"):] == "3"


def test_follow_listing_adds_new_containers_at_the_bottom_and_drops_the_gone() -> None:
    # Nothing changed: nothing to do.
    assert stats.follow_listing(["a", "b"], ["b", "a"]) == ([], [])
    # c started (the listing is newest first): it is added; a stopped or was removed: it goes.
    assert stats.follow_listing(["a", "b"], ["c", "b"]) == (["c"], ["a"])
    # From nothing, everything listed, in the listing's order (no duplicates).
    assert stats.follow_listing([], ["c", "b", "c"]) == (["c", "b"], [])
    assert stats.follow_listing(["a"], []) == ([], ["a"])
