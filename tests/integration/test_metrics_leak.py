"""No series leak after 10,000 containers came and went (issue 5).

One real daemon runs 10,000 short containers through its RPC socket, 16 at a
time: most run `true`, every 20th fails once and is restarted by its policy (a
``corral_container_restarts_total`` series named by it), every 50th sleeps
half a second, is renamed first and carries an exported label. A scraper runs alongside, so the collector
really did track them (each tracked container holds its cgroup and a netlink
socket in its network namespace). Afterwards, with every container removed:
no per-container series, no restart series, the exposition back to the size it
had before (same families, same bounded label sets), and the daemon holding no
more file descriptors than it did before.

``CORRAL_LEAK_CONTAINERS`` sets the count (default 10,000: about three minutes
on two cores).
"""

from __future__ import annotations

import faulthandler
import os
import threading
from pathlib import Path

import pytest
import trio

from ._daemon import Daemon
from ._metrics import container_series, metrics_daemon_on, samples, scrape

pytestmark = pytest.mark.root
COUNT = int(os.environ.get("CORRAL_LEAK_CONTAINERS", "10000"))
IN_FLIGHT = 16


@pytest.fixture(name="leak_daemon")
def leak_daemon_fixture(tmp_path: Path, cgroup_parent: str):
    with metrics_daemon_on(tmp_path, cgroup_parent, "--metrics-label", "tier") as d:
        yield d


async def _cycle(sock: str, count: int) -> list[int]:
    """Run ``count`` containers to completion and remove them; their exit codes."""
    from supervisor.client import connect

    codes: list[int] = []
    async with connect(sock) as client:
        async def one(i: int) -> None:
            body: dict = {"Image": "busybox", "Cmd": ["true"], "HostConfig": {}}
            if i % 20 == 0:      # fails once, restarted once by the policy, then exits 0
                body["Cmd"] = ["sh", "-c", "[ -e /ran ] || { touch /ran; exit 1; }"]
                body["HostConfig"] = {"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 1}}
            if i % 50 == 0:      # lives long enough to be scraped (a `true` is often gone before)
                body["Cmd"] = ["sleep", "0.5"]
                body["Labels"] = {"tier": f"t{i}"}
            created = await client.call("container.create", body=body, name=f"leak-{i}")
            cid = created["Id"]
            if i % 50 == 0:
                await client.call("container.rename", id=cid, name=f"renamed-{i}")
            await client.call("container.start", id=cid)
            codes.append(int((await client.call("container.wait", id=cid))["StatusCode"]))
            await client.call("container.remove", id=cid, force=True)

        async def worker(first: int) -> None:
            for i in range(first, count, IN_FLIGHT):
                await one(i)

        async with trio.open_nursery() as nursery:
            for w in range(IN_FLIGHT):
                nursery.start_soon(worker, w)
    return codes


def test_no_series_leak_after_many_containers(leak_daemon: Daemon) -> None:
    # Minutes by design: re-arm pytest's hang dump (faulthandler_timeout, 120 s) for this test.
    faulthandler.dump_traceback_later(900, exit=False)
    d = leak_daemon
    pid = d.process.pid
    baseline_text, _ = scrape(d.metrics_port)
    baseline_fds = len(os.listdir(f"/proc/{pid}/fd"))

    seen_running: list[int] = []
    done = threading.Event()

    def scraper() -> None:
        while not done.is_set():
            text, _ = scrape(d.metrics_port)
            seen_running.append(len(samples(text, "container_last_seen")))
            done.wait(0.2)

    thread = threading.Thread(target=scraper)
    thread.start()
    try:
        codes = trio.run(_cycle, str(d.socket), COUNT)
    finally:
        done.set()
        thread.join(30)
    assert len(codes) == COUNT and set(codes) == {0}
    assert max(seen_running) > 0                  # scrapes did see (and open) running containers

    text, _ = scrape(d.metrics_port)
    assert container_series(text) == []
    assert samples(text, "corral_container_restarts_total") == []
    assert samples(text, "corral_container_restarts_created") == []
    assert samples(text, "corral_container_exits_total", code="0") == [COUNT]
    failed_once = [i for i in range(0, COUNT, 20) if i % 50]
    assert samples(text, "corral_container_exits_total", code="1") == ([len(failed_once)] if failed_once else [])
    # Same families and label sets as before: only values changed.
    assert _series_keys(text) == _series_keys(baseline_text)
    assert len(os.listdir(f"/proc/{pid}/fd")) <= baseline_fds


def _series_keys(text: str) -> set[tuple]:
    from prometheus_client.parser import text_string_to_metric_families
    return {(s.name, tuple(sorted(s.labels.items()))) for f in text_string_to_metric_families(text)
            for s in f.samples if not s.name.startswith("corral_container_exits")}
