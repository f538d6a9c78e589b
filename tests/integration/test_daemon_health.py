"""Health checks on the real kernel: probes by exec, transitions, events, inspect, ps, service_healthy."""

from __future__ import annotations

from pathlib import Path

import pytest

from ._daemon import Daemon, daemon_fixture  # noqa: F401 - the `daemon` fixture
from .conftest import wait_for

pytestmark = pytest.mark.root


def _health(daemon: Daemon, name: str) -> dict:
    return daemon.inspect(name)["State"].get("Health") or {}


def test_healthy_then_unhealthy_with_events_inspect_and_ps(daemon: Daemon) -> None:
    # Failures inside the start period do not count while it is starting: it stays "starting".
    daemon.ok("run", "-d", "--name", "hc", "--health-cmd", "test -e /tmp/ok", "--health-interval", "100ms",
              "--health-retries", "2", "--health-start-period", "1h", "busybox", "sleep", "1000")
    wait_for(lambda: len(_health(daemon, "hc").get("Log", [])) >= 3, timeout=20, what="three failed probes")
    assert _health(daemon, "hc")["Status"] == "starting" and _health(daemon, "hc")["FailingStreak"] == 0
    assert "(health: starting)" in daemon.ok("ps")
    daemon.ok("exec", "hc", "touch", "/tmp/ok")
    wait_for(lambda: _health(daemon, "hc")["Status"] == "healthy", timeout=20, what="healthy")
    assert "(healthy)" in daemon.ok("ps")
    daemon.ok("exec", "hc", "rm", "/tmp/ok")
    wait_for(lambda: _health(daemon, "hc")["Status"] == "unhealthy", timeout=20, what="unhealthy")
    health = _health(daemon, "hc")
    assert health["FailingStreak"] >= 2 and 1 <= len(health["Log"]) <= 5
    last = health["Log"][-1]
    assert last["ExitCode"] == 1 and set(last) == {"Start", "End", "ExitCode", "Output"}
    assert "(unhealthy)" in daemon.ok("ps")
    statuses = [e["action"] for e in daemon.events("--filter", "container=hc") if e["action"].startswith("health_status")]
    assert statuses == ["health_status: healthy", "health_status: unhealthy"], statuses
    assert daemon.inspect("hc")["State"]["Running"]                     # unhealthy does not stop it


def test_a_probe_that_times_out_is_killed_and_fails(daemon: Daemon) -> None:
    daemon.ok("run", "-d", "--name", "slow", "--health-cmd", "sleep 30", "--health-interval", "100ms",
              "--health-timeout", "300ms", "--health-retries", "1", "busybox", "sleep", "1000")
    wait_for(lambda: _health(daemon, "slow").get("Status") == "unhealthy", timeout=20, what="unhealthy")
    last = _health(daemon, "slow")["Log"][-1]
    assert last["ExitCode"] == -1 and last["Output"] == "Health check exceeded timeout (300ms)"
    # The timed-out probes were killed: no `sleep 30` piles up in the container.
    wait_for(lambda: daemon.ok("exec", "slow", "ps", "-o", "args").count("sleep 30") <= 1, timeout=10,
             what="killed probes")


def test_no_healthcheck_and_exit_output(daemon: Daemon) -> None:
    daemon.ok("run", "-d", "--name", "none", "--no-healthcheck", "busybox", "sleep", "1000")
    assert "Health" not in daemon.inspect("none")["State"]
    out = daemon.cli("run", "-d", "--no-healthcheck", "--health-cmd", "true", "busybox", "true")
    assert out.returncode == 125 and "conflicts" in out.stderr
    daemon.ok("run", "-d", "--name", "talk", "--health-cmd", "echo hello; exit 2", "--health-interval", "100ms",
              "busybox", "sleep", "1000")
    wait_for(lambda: _health(daemon, "talk").get("Log"), timeout=20, what="a probe result")
    assert _health(daemon, "talk")["Log"][0]["Output"] == "hello\n"
    assert _health(daemon, "talk")["Log"][0]["ExitCode"] == 2


def test_service_healthy_waits_for_the_dependency(daemon: Daemon, tmp_path: Path) -> None:
    compose = tmp_path / "compose.yaml"
    compose.write_text(
        "name: hp\nservices:\n"
        "  db:\n    image: busybox:latest\n"
        "    command: sh -c 'sleep 1; touch /tmp/ready; exec sleep 1000'\n"
        "    healthcheck:\n      test: test -e /tmp/ready\n      interval: 100ms\n      start_period: 1h\n"
        "  app:\n    image: busybox:latest\n    command: sleep 1000\n"
        "    depends_on:\n      db:\n        condition: service_healthy\n")
    daemon.ok("up", "-f", str(compose))
    events = daemon.events("--filter", "type=container")
    healthy = next(e["seq"] for e in events if e["action"] == "health_status: healthy"
                   and e["attributes"]["name"] == "hp-db-1")
    app_start = next(e["seq"] for e in events if e["action"] == "start" and e["attributes"]["name"] == "hp-app-1")
    assert healthy < app_start
    # A dependency without a health check is an error, as Compose's.
    compose.write_text(
        "name: hq\nservices:\n  db:\n    image: busybox:latest\n    command: sleep 1000\n"
        "  app:\n    image: busybox:latest\n    command: sleep 1000\n"
        "    depends_on:\n      db:\n        condition: service_healthy\n")
    out = daemon.cli("up", "-f", str(compose))
    assert out.returncode == 125 and "has no healthcheck configured" in out.stderr
