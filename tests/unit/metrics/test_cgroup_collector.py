"""CgroupCollector against the captured v1 and v2 cgroupfs trees (tests/fixtures/cgroupfs).

Each test copies a tree into tmp_path, opens ``/corral/web`` through
runtime.cgroups with ``fs_root``, and asserts on the registry as
client_python's own collector tests do (``get_sample_value``).
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from metrics import CgroupCollector, TrackedContainer, container_label_name, render
from runtime.cgroups import (
    FakeCgroup,
    Resources,
    cpu_shares_to_weight,
    cpu_weight_to_shares,
    open_cgroup,
)
from runtime.devices import BlockDeviceNames
from runtime.errors import CgroupError
from runtime.net import LinkStats

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
CG = "sys/fs/cgroup"
WEB = {"id": "c0ffee", "name": "web", "image": "busybox"}
NOW = 1_700_000_100.0


def open_tree(tmp_path: Path, version: str):
    root = tmp_path / version
    shutil.copytree(FIXTURES / "cgroupfs" / version, root)
    mountinfo = "hybrid-host" if version == "v1" else "unified-uml"
    return root, open_cgroup("/corral/web", mountinfo=(FIXTURES / "mountinfo" / f"{mountinfo}.txt").read_text(),
                             fs_root=root)


# The block devices the fixtures' blkio/io.stat name, as /sys/dev/block would
# resolve them (BlockDeviceNames itself is tested on a sysfs tree below).
DEVICES = {"254:0": "/dev/vda"}


def setup(cgroup, **collector_args) -> tuple[CollectorRegistry, CgroupCollector]:
    registry = CollectorRegistry()
    collector = CgroupCollector(clock=lambda: NOW, device_name=lambda d: DEVICES.get(d, d), **collector_args)
    registry.register(collector)
    return registry, collector


def web(cgroup, **kwargs) -> TrackedContainer:
    return TrackedContainer(id="c0ffee", name="web", image="busybox", cgroup=cgroup,
                            started_at_s=1_700_000_000.0, **kwargs)


def test_v1_values_under_cadvisor_names(tmp_path: Path) -> None:
    _, cg = open_tree(tmp_path, "v1")
    registry, collector = setup(cg)
    weight = cpu_shares_to_weight(512)                      # docker run --cpu-shares 512
    collector.track(web(cg, resources=Resources(cpu_quota_usec=50000, cpu_period_usec=100000, cpu_weight=weight)))
    v = lambda name, **extra: registry.get_sample_value(name, {**WEB, **extra})
    assert v("container_cpu_usage_seconds_total", cpu="total") == 0.302856
    assert v("container_cpu_user_seconds_total") == 0.26
    assert v("container_cpu_system_seconds_total") == 0.03
    assert v("container_cpu_cfs_periods_total") == 6
    assert v("container_cpu_cfs_throttled_periods_total") == 5
    assert v("container_cpu_cfs_throttled_seconds_total") == 0.243518
    assert v("container_memory_usage_bytes") == 29962240
    assert v("container_memory_working_set_bytes") == 29962240 - 8388608
    assert v("container_memory_rss") == 21110784
    assert v("container_memory_cache") == 8400896
    assert v("container_memory_swap") == 0
    assert v("container_memory_max_usage_bytes") == 38273024
    assert v("container_memory_failcnt") == 0
    assert v("container_oom_events_total") == 0
    assert v("container_processes") == 0          # the fixture's cgroup.procs was emptied
    assert v("container_threads") == 1
    assert v("container_threads_max") == 64
    assert v("container_fs_reads_bytes_total", device="/dev/vda") == 1048576
    assert v("container_fs_writes_bytes_total", device="/dev/vda") == 4194304
    assert v("container_fs_reads_total", device="8:16") == 1
    assert v("container_fs_writes_total", device="/dev/vda") == 64
    assert v("container_start_time_seconds") == 1_700_000_000.0
    assert v("container_last_seen") == NOW
    assert v("container_spec_memory_limit_bytes") == 256 << 20
    assert v("container_spec_cpu_quota") == 50000
    assert v("container_spec_cpu_period") == 100000
    assert v("container_spec_cpu_shares") == cpu_weight_to_shares(weight)   # runtime's round trip of 512


def test_v2_values_under_cadvisor_names(tmp_path: Path) -> None:
    _, cg = open_tree(tmp_path, "v2")
    registry, collector = setup(cg)
    collector.track(web(cg))
    v = lambda name, **extra: registry.get_sample_value(name, {**WEB, **extra})
    assert v("container_cpu_usage_seconds_total", cpu="total") == 0.55
    assert v("container_cpu_user_seconds_total") == 0.55
    assert v("container_cpu_cfs_throttled_periods_total") == 10
    assert v("container_cpu_cfs_throttled_seconds_total") == 0.5
    usage = int((tmp_path / "v2" / CG / "corral/web/memory.current").read_text())
    assert v("container_memory_usage_bytes") == usage
    assert v("container_memory_working_set_bytes") == usage - 4194304   # inactive_file set by hand
    assert v("container_memory_max_usage_bytes") is not None
    assert v("container_spec_memory_limit_bytes") == 256 << 20
    assert v("container_threads_max") == 64
    assert v("container_fs_reads_bytes_total", device="/dev/vda") == 1048576
    # Nothing asked for: no quota series (cAdvisor's rule), default shares.
    assert v("container_spec_cpu_quota") is None and v("container_spec_cpu_period") is None
    assert v("container_spec_cpu_shares") == 1024


def test_oom_kills_come_from_the_cgroup_counter(tmp_path: Path) -> None:
    root, cg = open_tree(tmp_path, "v2")
    events = root / CG / "corral/web/memory.events"
    events.write_text("low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\n")
    registry, collector = setup(cg)
    collector.track(web(cg))
    assert registry.get_sample_value("container_oom_events_total", WEB) == 2
    assert registry.get_sample_value("container_memory_failcnt", WEB) == 7


def test_unlimited_memory_is_zero_and_working_set_never_negative(tmp_path: Path) -> None:
    root, cg = open_tree(tmp_path, "v1")
    mem = root / CG / "memory/corral/web"
    (mem / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (mem / "memory.usage_in_bytes").write_text("1000\n")
    (root / CG / "pids/corral/web/pids.max").write_text("max\n")
    registry, collector = setup(cg)
    collector.track(web(cg))
    assert registry.get_sample_value("container_spec_memory_limit_bytes", WEB) == 0
    assert registry.get_sample_value("container_memory_working_set_bytes", WEB) == 0
    assert registry.get_sample_value("container_threads_max", WEB) == 0


def test_percpu_when_asked_and_available(tmp_path: Path) -> None:
    _, cg = open_tree(tmp_path, "v1")
    registry, collector = setup(cg, percpu=True)
    collector.track(web(cg))
    assert registry.get_sample_value("container_cpu_usage_seconds_total", {**WEB, "cpu": "cpu00"}) == 0.002211
    assert registry.get_sample_value("container_cpu_usage_seconds_total", {**WEB, "cpu": "cpu01"}) == 0.300645
    assert registry.get_sample_value("container_cpu_usage_seconds_total", {**WEB, "cpu": "total"}) is None


def test_percpu_falls_back_to_total_on_v2(tmp_path: Path) -> None:
    _, cg = open_tree(tmp_path, "v2")                       # v2 has no per-CPU usage
    registry, collector = setup(cg, percpu=True)
    collector.track(web(cg))
    assert registry.get_sample_value("container_cpu_usage_seconds_total", {**WEB, "cpu": "total"}) == 0.55


def test_vanished_cgroup_is_skipped(tmp_path: Path) -> None:
    root, cg = open_tree(tmp_path, "v2")
    _, other = open_tree(tmp_path / "other", "v2")
    registry, collector = setup(cg)
    collector.track(web(cg))
    collector.track(TrackedContainer(id="beef", name="db", image="busybox", cgroup=other))
    shutil.rmtree(root / CG / "corral/web")
    assert registry.get_sample_value("container_memory_usage_bytes", WEB) is None
    assert registry.get_sample_value("container_last_seen", WEB) is None
    assert registry.get_sample_value("container_memory_usage_bytes",
                                     {"id": "beef", "name": "db", "image": "busybox"}) is not None


def test_untrack_removes_every_series(tmp_path: Path) -> None:
    _, cg = open_tree(tmp_path, "v1")
    registry, collector = setup(cg)
    collector.track(web(cg))
    collector.untrack("c0ffee")
    collector.untrack("never-tracked")
    text = render(registry)[0].decode()
    assert 'name="web"' not in text
    assert "# TYPE container_memory_usage_bytes gauge" in text   # families stay, empty


def test_allowed_labels_only(tmp_path: Path) -> None:
    _, cg = open_tree(tmp_path, "v2")
    registry, collector = setup(cg, allowed_labels=["com.example.tier"])
    collector.track(web(cg, labels={"com.example.tier": "front", "secret": "x"}))
    collector.track(TrackedContainer(id="beef", name="db", image="busybox", cgroup=cg))
    tier = container_label_name("com.example.tier")
    assert tier == "container_label_com_example_tier"
    assert registry.get_sample_value("container_threads", {**WEB, tier: "front"}) == 1
    assert registry.get_sample_value("container_threads", {"id": "beef", "name": "db", "image": "busybox",
                                                           tier: ""}) == 1
    assert "secret" not in render(registry)[0].decode()


def test_colliding_allowed_labels_are_refused() -> None:
    with pytest.raises(ValueError, match="collide"):
        CgroupCollector(allowed_labels=["a.b", "a_b"])


def test_absent_controllers_leave_series_out() -> None:
    registry, collector = setup(None)
    collector.track(web(FakeCgroup("/corral/web")))        # every stats field None
    assert registry.get_sample_value("container_memory_usage_bytes", WEB) is None
    assert registry.get_sample_value("container_spec_memory_limit_bytes", WEB) is None
    assert registry.get_sample_value("container_processes", WEB) == 0
    assert registry.get_sample_value("container_last_seen", WEB) == NOW


def test_track_replaces_the_snapshot_a_scrape_iterates() -> None:
    # collect() iterates one snapshot: tracking during a scrape neither raises
    # ("dictionary changed size during iteration") nor shows up in that scrape.
    collector = CgroupCollector(clock=lambda: NOW)
    started, resume = threading.Event(), threading.Event()

    class SlowCgroup(FakeCgroup):
        def stats(self):
            started.set()
            resume.wait(5)
            return super().stats()

    collector.track(web(SlowCgroup("/slow")))
    result: list = []
    scrape = threading.Thread(target=lambda: result.extend(collector.collect()))
    scrape.start()
    assert started.wait(5)
    for i in range(100):
        collector.track(TrackedContainer(id=f"n{i}", name=f"n{i}", image="i", cgroup=FakeCgroup()))
    collector.untrack("c0ffee")
    resume.set()
    scrape.join(5)
    seen = next(m for m in result if m.name == "container_last_seen")
    assert [s.labels["id"] for s in seen.samples] == ["c0ffee"]
    assert len(collector.tracked()) == 100


def test_a_bad_file_skips_only_that_container(tmp_path: Path) -> None:
    root, cg = open_tree(tmp_path, "v2")
    (root / CG / "corral/web/memory.stat").write_text("anon lots\n")
    registry, collector = setup(cg)
    collector.track(web(cg))
    with pytest.raises(CgroupError):
        cg.stats()
    assert registry.get_sample_value("container_last_seen", WEB) is None


class Links:
    """A network namespace's counters as the collector sees them (the real reader,
    runtime.net.NetnsCounters, is tested on a real namespace in tests/integration)."""

    def __init__(self, links=None, error: OSError | None = None) -> None:
        self.links, self.error = links or {}, error

    def read(self):
        if self.error is not None:
            raise self.error
        return self.links


def test_network_series_per_interface(tmp_path: Path) -> None:
    _, cg = open_tree(tmp_path, "v1")
    registry, collector = setup(cg)
    eth0 = LinkStats(rx_bytes=1500, rx_packets=3, rx_errors=1, rx_dropped=2,
                     tx_bytes=700, tx_packets=5, tx_errors=0, tx_dropped=4)
    collector.track(web(cg, network=Links({"eth0": eth0})))
    v = lambda name: registry.get_sample_value(name, {**WEB, "interface": "eth0"})
    assert v("container_network_receive_bytes_total") == 1500
    assert v("container_network_receive_packets_total") == 3
    assert v("container_network_receive_errors_total") == 1
    assert v("container_network_receive_packets_dropped_total") == 2
    assert v("container_network_transmit_bytes_total") == 700
    assert v("container_network_transmit_packets_total") == 5
    assert v("container_network_transmit_errors_total") == 0
    assert v("container_network_transmit_packets_dropped_total") == 4


def test_a_vanished_namespace_leaves_the_cgroup_series(tmp_path: Path) -> None:
    _, cg = open_tree(tmp_path, "v1")
    registry, collector = setup(cg)
    collector.track(web(cg, network=Links(error=OSError(9, "netlink RTM_GETSTATS: Bad file descriptor"))))
    assert registry.get_sample_value("container_memory_usage_bytes", WEB) == 29962240
    assert "container_network_receive_bytes_total{" not in render(registry)[0].decode()


def test_block_device_names_from_sysfs(tmp_path: Path) -> None:
    block = tmp_path / "dev" / "block"
    (block / "254:0").mkdir(parents=True)
    (block / "254:0" / "uevent").write_text("MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n")
    (block / "7:0").mkdir()
    (block / "7:0" / "uevent").write_text("MAJOR=7\nMINOR=0\n")           # no DEVNAME
    names = BlockDeviceNames(sys_root=tmp_path, max_entries=2)
    assert names("254:0") == "/dev/vda"
    assert names("7:0") == "7:0"
    (block / "254:0" / "uevent").write_text("DEVNAME=vdb\n")
    assert names("254:0") == "/dev/vda"             # cached: sysfs is read once per device
    assert names("8:16") == "8:16"                  # no such device; the full cache started over
    assert names("254:0") == "/dev/vdb"
