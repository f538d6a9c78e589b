"""The figures on /metrics against what the kernel did: CPU seconds under a quota,
100 MB of anonymous memory, OOM kills, and traffic through an interface of the
container's own network namespace.

The CPU, memory and OOM tests are version-independent: they run here on
cgroup v1 and, marked ``cgroup_v2``, again inside user-mode-linux on v2
(tests/integration/test_in_uml.py). Waits poll /metrics with a deadline; the
tolerances are the kernel's (a quota is enforced per 100 ms period), never
the machine's speed.
"""

from __future__ import annotations

import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from ._daemon import Daemon
from ._metrics import cgroup_of, labelled, metrics_daemon_fixture, samples, scrape  # noqa: F401
from .conftest import wait_for

pytestmark = pytest.mark.root
# 100,000,000 bytes of anonymous memory, fast even in user-mode-linux: dd reads them
# from /dev/zero into one buffer (every page touched), then blocks writing it to a
# pipe nobody reads. Three processes while it holds them: sh, dd, sleep.
HOLD_100MB = "dd if=/dev/zero bs=100000000 count=1 2>/dev/null | sleep 1000"


def scrape_until(d: Daemon, ready, what: str, timeout: float = 60) -> str:
    """Scrape until ``ready(text)`` is true; the text of that scrape."""
    seen: list[str] = []

    def attempt() -> bool:
        seen[:] = [scrape(d.metrics_port)[0]]
        return ready(seen[0])
    wait_for(attempt, timeout=timeout, what=what)
    return seen[0]


def one(text: str, metric: str, **labels: str) -> float:
    values = samples(text, metric, **labels)
    assert len(values) == 1, (metric, labels, values)
    return values[0]


@pytest.mark.cgroup_v2
def test_half_a_cpu_for_four_seconds_is_two_cpu_seconds(metrics_daemon: Daemon) -> None:
    d = metrics_daemon
    # Burn for 4 s of wall time under a 0.5 CPU quota, then leave only `sleep`.
    cid = d.ok("run", "-d", "--cpus", "0.5", "--name", "burner", "busybox", "sh", "-c",
               'timeout 4 sh -c "while :; do :; done"; exec sleep 300').strip()
    text = scrape_until(d, lambda t: samples(t, "container_processes", name="burner") == [1]
                        and samples(t, "container_cpu_usage_seconds_total", name="burner")[0] > 1,
                        "the 4 s burn to end")
    cpu = one(text, "container_cpu_usage_seconds_total", name="burner", cpu="total")
    assert 1.7 <= cpu <= 2.3, cpu                                 # 0.5 CPU x 4 s, quota per 100 ms period
    kernel = cgroup_of(d, cid).stats().cpu_usage_usec / 1e6       # idle now: the same figure, read later
    assert abs(kernel - cpu) < 0.05, (kernel, cpu)
    assert one(text, "container_spec_cpu_quota", name="burner") == 50000
    assert one(text, "container_spec_cpu_period", name="burner") == 100000
    assert one(text, "container_cpu_cfs_throttled_periods_total", name="burner") >= 10


@pytest.mark.cgroup_v2
def test_100mb_allocated_shows_in_usage_and_working_set(metrics_daemon: Daemon) -> None:
    d = metrics_daemon
    cid = d.ok("run", "-d", "--name", "holder", "busybox", "sh", "-c", HOLD_100MB).strip()
    text = scrape_until(d, lambda t: samples(t, "container_processes", name="holder") == [3]
                        and samples(t, "container_memory_working_set_bytes", name="holder")[0] >= 100_000_000,
                        "the container to hold 100 MB", timeout=180)
    usage = one(text, "container_memory_usage_bytes", name="holder")
    working_set = one(text, "container_memory_working_set_bytes", name="holder")
    rss = one(text, "container_memory_rss", name="holder")
    assert 100_000_000 <= rss <= working_set <= usage < 300_000_000, (rss, working_set, usage)
    kernel = cgroup_of(d, cid).stats()
    assert abs(kernel.memory_usage_bytes - usage) < 5_000_000, (kernel.memory_usage_bytes, usage)
    assert abs(kernel.memory_working_set_bytes - working_set) < 5_000_000
    assert one(text, "container_spec_memory_limit_bytes", name="holder") == 0   # unlimited


@pytest.mark.cgroup_v2
def test_oom_kill_counts_in_the_cgroup_and_restarts_by_policy(metrics_daemon: Daemon) -> None:
    d = metrics_daemon
    # A child is OOM-killed, the init lives on: the cgroup's own counter says 1.
    d.ok("run", "-d", "-m", "32m", "--memory-swap", "32m", "--name", "survivor", "busybox", "sh", "-c",
         "dd if=/dev/zero bs=100000000 count=1 2>/dev/null | cat >/dev/null; exec sleep 300")
    text = scrape_until(d, lambda t: samples(t, "container_oom_events_total", name="survivor") not in ([], [0.0])
                        and samples(t, "container_processes", name="survivor") == [1],
                        "the child's OOM kill to be counted", timeout=180)
    assert one(text, "container_oom_events_total", name="survivor") == 1
    # The init itself is OOM-killed: the policy restarts it once, for the reason "oom".
    d.ok("run", "-d", "-m", "32m", "--memory-swap", "32m", "--restart", "on-failure:1", "--name", "victim",
         "busybox", "dd", "if=/dev/zero", "bs=100000000", "count=1", "of=/dev/null")
    assert d.ok("wait", "victim").strip() == "137"
    text, _ = scrape(d.metrics_port)
    assert samples(text, "corral_container_restarts_total", name="victim", reason="oom") == [1]
    assert samples(text, "corral_container_exits_total", code="137") == [2]
    assert d.inspect("victim")["State"]["OOMKilled"] is True


def test_network_counters_from_the_container_namespace(metrics_daemon: Daemon) -> None:
    d = metrics_daemon
    cid = d.ok("run", "-d", "--name", "netted", "busybox", "sleep", "300").strip()
    pid = d.inspect("netted")["State"]["Pid"]
    host_end, inner = f"cm{uuid.uuid4().hex[:8]}", "eth1"
    subprocess.run(["ip", "link", "add", host_end, "type", "veth", "peer", "name", inner, "netns", str(pid)],
                   check=True, timeout=30)
    try:
        for where in ([], ["nsenter", "-t", str(pid), "-n"]):
            dev = inner if where else host_end
            # No IPv6 (router solicitations would add packets of their own).
            subprocess.run([*where, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1"], check=True, timeout=30)
        subprocess.run(["ip", "addr", "add", "10.231.7.1/30", "dev", host_end], check=True, timeout=30)
        subprocess.run(["ip", "link", "set", host_end, "up"], check=True, timeout=30)
        subprocess.run(["nsenter", "-t", str(pid), "-n", "sh", "-c",
                        f"ip addr add 10.231.7.2/30 dev {inner} && ip link set {inner} up"], check=True, timeout=30)
        # 50 datagrams of 1000 bytes into the container's namespace (to a closed port:
        # counted on receipt), then wait for the kernel to show them all.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(50):
                s.sendto(b"x" * 1000, ("10.231.7.2", 9))
        wait_for(lambda: _proc_net_dev(pid)[inner][1] >= 50, timeout=30, what="the datagrams to arrive")
        before = _proc_net_dev(pid)[inner]
        text = scrape_until(d, lambda t: samples(t, "container_network_receive_packets_total", name="netted",
                                                 interface=inner) not in ([], [0.0])
                            and samples(t, "container_network_receive_packets_total", name="netted",
                                        interface=inner)[0] >= before[1],
                            "the datagrams to be counted")
        after = _proc_net_dev(pid)[inner]
        rx_bytes = one(text, "container_network_receive_bytes_total", name="netted", interface=inner)
        rx_packets = one(text, "container_network_receive_packets_total", name="netted", interface=inner)
        assert before[0] <= rx_bytes <= after[0] and before[1] <= rx_packets <= after[1]
        assert rx_packets >= 50 and rx_bytes >= 50 * 1000
        tx = one(text, "container_network_transmit_packets_total", name="netted", interface=inner)
        assert tx >= 0
        # Loopback is not the container's network cost (cAdvisor leaves it out too).
        assert {labels["interface"] for labels in labelled(text, "container_network_receive_bytes_total",
                                                           name="netted")} == {inner}
        assert labelled(text, "container_network_receive_bytes_total", id=cid)
    finally:
        subprocess.run(["ip", "link", "del", host_end], check=False, timeout=30, capture_output=True)
    d.ok("stop", "-t", "0", "netted")
    text, _ = scrape(d.metrics_port)
    assert not labelled(text, "container_network_receive_bytes_total", name="netted")


def _proc_net_dev(pid: int) -> dict[str, tuple[int, int]]:
    """(rx bytes, rx packets) per interface as the kernel's /proc/PID/net/dev shows them."""
    out = {}
    for line in Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]:
        name, _, fields = line.partition(":")
        values = fields.split()
        out[name.strip()] = (int(values[0]), int(values[1]))
    return out
