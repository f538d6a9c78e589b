"""/metrics of a real daemon: cAdvisor's series for a running container, gone once it exits,
promtool's verdict, and a real Prometheus server (Debian ``prometheus``) scraping it.

Every test runs its own daemon on a free port (never dockerd's 9323: other
daemons may hold it), bounds each wait, and kills what it started by PID.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from ._daemon import Daemon
from ._metrics import cgroup_of, container_series, free_port, metrics_daemon_fixture, samples, scrape  # noqa: F401
from .conftest import wait_for

pytestmark = pytest.mark.root


def test_running_container_series_and_gone_after_exit(metrics_daemon: Daemon) -> None:
    d = metrics_daemon
    cid = d.ok("run", "-d", "-m", "64m", "--name", "metered", "busybox", "sleep", "300").strip()
    text, ctype = scrape(d.metrics_port)
    assert ctype == "text/plain; version=0.0.4; charset=utf-8"
    assert samples(text, "container_spec_memory_limit_bytes", name="metered", id=cid) == [67108864]
    assert cgroup_of(d, cid).stats().memory_limit_bytes == 67108864
    (usage,) = samples(text, "container_memory_usage_bytes", name="metered")
    assert usage > 0
    assert samples(text, "container_threads", name="metered") == [1]
    assert samples(text, "container_processes", name="metered") == [1]
    assert samples(text, "corral_containers", state="running") == [1]
    d.ok("stop", "-t", "0", "metered")
    text, _ = scrape(d.metrics_port)                      # the very next scrape
    assert not container_series(text, name="metered")
    assert samples(text, "corral_containers", state="running") == [0]
    assert samples(text, "corral_container_exits_total", code="137") == [1]
    assert samples(text, "corral_container_stop_duration_seconds_count") == [1]
    assert samples(text, "corral_containers", state="exited") == [1]


def test_exit_by_itself_and_restart_counter(metrics_daemon: Daemon) -> None:
    d = metrics_daemon
    d.ok("run", "-d", "--name", "flaky", "--restart", "on-failure:2", "busybox", "sh", "-c", "exit 5")
    assert d.ok("wait", "flaky").strip() == "5"
    text, _ = scrape(d.metrics_port)
    assert not container_series(text, name="flaky")
    assert samples(text, "corral_container_exits_total", code="5") == [3]
    assert samples(text, "corral_container_restarts_total", name="flaky", reason="exit") == [2]
    assert samples(text, "corral_container_start_duration_seconds_count") == [3]
    d.ok("rm", "flaky")
    text, _ = scrape(d.metrics_port)
    assert not samples(text, "corral_container_restarts_total", name="flaky")   # no series leak


# promtool lint findings that cAdvisor's names would force on us. None today
# (promtool 2.42): the one cAdvisor name that breaks a lint rule,
# container_memory_failcnt (a counter without _total), is typed "unknown" by the
# collector (see metrics/_cgroup.py), and the rule applies to counters only.
# A finding added here must name its metric and say which cAdvisor name demands it.
ALLOWED_LINT: dict[str, str] = {}


def test_promtool_check_metrics(metrics_daemon: Daemon) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("needs promtool (Debian package prometheus)")
    d = metrics_daemon
    d.ok("run", "-d", "-m", "64m", "--name", "linted", "busybox", "sleep", "300")
    text, _ = scrape(d.metrics_port)
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30,
                          check=False)
    findings = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    # A parse error makes promtool exit 1 with "error while linting"; lint findings
    # are listed one per line, "metric_name lint message".
    assert "error while linting" not in done.stderr, done.stderr
    unexpected = [f for f in findings if f.split(" ", 1)[0] not in ALLOWED_LINT]
    assert not unexpected, findings
    assert done.returncode == (3 if findings else 0), (done.returncode, findings)


def test_openmetrics_by_negotiation(metrics_daemon: Daemon) -> None:
    d = metrics_daemon
    d.ok("run", "-d", "--name", "om", "busybox", "sleep", "300")
    text, ctype = scrape(d.metrics_port, "application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
    assert ctype.startswith("application/openmetrics-text; version=1.0.0")
    assert text.endswith("# EOF\n") and 'container_memory_failcnt{' in text


def test_prometheus_scrapes_the_daemon(metrics_daemon: Daemon, tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("needs prometheus (Debian package prometheus)")
    d = metrics_daemon
    cid = d.ok("run", "-d", "-m", "64m", "--name", "watched", "busybox", "sleep", "300").strip()
    limit = cgroup_of(d, cid).stats().memory_limit_bytes
    web_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({       # YAML is a superset of JSON
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{"job_name": "corral", "static_configs": [{"targets": [f"127.0.0.1:{d.metrics_port}"]}]}],
    }))
    data = tmp_path / "prometheus-data"
    log = tmp_path / "prometheus.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={data}",
             f"--web.listen-address=127.0.0.1:{web_port}"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        def query(expr: str) -> list:
            url = f"http://127.0.0.1:{web_port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    return json.load(response)["data"]["result"]
            except OSError:
                return []                  # not listening yet
        result = wait_for(lambda: server.poll() is None and query('container_spec_memory_limit_bytes{name="watched"}')
                          or (server.poll() is not None and ["died"]),
                          timeout=60, what="prometheus to scrape the daemon")
        assert server.poll() is None, log.read_text()[-3000:]
        assert float(result[0]["value"][1]) == limit == 67108864
        assert result[0]["metric"]["id"] == cid
        (usage,) = query('container_memory_usage_bytes{name="watched"}')
        assert float(usage["value"][1]) > 0
        (up,) = query('up{job="corral"}')
        assert up["value"][1] == "1"
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        shutil.rmtree(data, ignore_errors=True)


def test_event_loop_lag_is_sampled(metrics_daemon: Daemon) -> None:
    d = metrics_daemon
    count = wait_for(lambda: [c for c in samples(scrape(d.metrics_port)[0], "corral_event_loop_lag_seconds_count")
                              if c >= 2], timeout=30, what="two loop-lag samples")
    text, _ = scrape(d.metrics_port)
    assert samples(text, "corral_event_loop_lag_seconds_bucket", le="+Inf") >= count
    assert samples(text, "corral_event_loop_lag_seconds_sum")[0] >= 0
