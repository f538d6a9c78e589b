"""The health state machine and monitor (no root; trio's MockClock), and the --health-* flags."""

from __future__ import annotations

import pytest
import trio

from protocols.container_config import InvalidContainerConfig, healthcheck_from_flags
from supervisor.errors import InvalidRequest
from supervisor.health import (
    HEALTHY, STARTING, UNHEALTHY, HealthConfig, HealthState, ProbeResult, merge_healthcheck, monitor,
)

pytestmark = pytest.mark.anyio


def result(code: int) -> ProbeResult:
    return ProbeResult(0, 0, code, "")


def test_success_resets_the_streak_and_failures_count_up_to_retries() -> None:
    s = HealthState()
    s = s.record(result(1), retries=2, in_start_period=False)
    assert (s.status, s.failing_streak) == (STARTING, 1)
    s = s.record(result(0), retries=2, in_start_period=False)
    assert (s.status, s.failing_streak) == (HEALTHY, 0)
    s = s.record(result(1), retries=2, in_start_period=False)
    assert (s.status, s.failing_streak) == (HEALTHY, 1)
    s = s.record(result(7), retries=2, in_start_period=False)
    assert (s.status, s.failing_streak) == (UNHEALTHY, 2)


def test_start_period_failures_do_not_count_while_starting_only() -> None:
    s = HealthState().record(result(1), retries=1, in_start_period=True)
    assert (s.status, s.failing_streak, len(s.log)) == (STARTING, 0, 1)
    s = s.record(result(0), retries=1, in_start_period=True).record(result(1), retries=1, in_start_period=True)
    assert s.status == UNHEALTHY                 # once healthy, the start period no longer protects


def test_the_log_keeps_the_last_five() -> None:
    s = HealthState()
    for code in range(8):
        s = s.record(result(code), retries=100, in_start_period=False)
    assert [r.exit_code for r in s.log] == [3, 4, 5, 6, 7]


def test_merge_takes_the_containers_fields_over_the_images() -> None:
    image = {"Test": ["CMD", "true"], "Interval": 5_000_000_000, "Retries": 7}
    assert merge_healthcheck(None, image) == HealthConfig(("CMD", "true"), interval_s=5.0, retries=7)
    merged = merge_healthcheck({"Test": ["CMD-SHELL", "exit 1"], "Timeout": 1_500_000_000}, image)
    assert merged == HealthConfig(("CMD-SHELL", "exit 1"), interval_s=5.0, timeout_s=1.5, retries=7)
    assert merged.probe_args() == ["/bin/sh", "-c", "exit 1"]
    assert merge_healthcheck({"Test": ["NONE"]}, image) is None
    assert merge_healthcheck(None, None) is None
    with pytest.raises(InvalidRequest, match="Healthcheck.Test"):
        merge_healthcheck({"Test": ["SHELL", "x"]}, None)


async def test_monitor_probes_at_the_interval_times_out_and_reports_changes() -> None:
    config = HealthConfig(("CMD", "x"), interval_s=10, timeout_s=3, retries=2)
    codes = iter([0, 1, None, 0])          # None: the probe hangs past the timeout
    seen: list[tuple[float, str, str | None, int]] = []
    start = trio.current_time()

    async def probe() -> tuple[int, str]:
        code = next(codes)
        if code is None:
            await trio.sleep_forever()
        return code, "out"

    async def on_result(state: HealthState, changed: str | None) -> None:
        seen.append((trio.current_time() - start, state.status, changed, state.log[-1].exit_code))

    with trio.move_on_after(45):
        await monitor(config, probe, on_result)
    assert seen == [(10, HEALTHY, HEALTHY, 0), (20, HEALTHY, None, 1), (33, UNHEALTHY, UNHEALTHY, -1),
                    (43, HEALTHY, HEALTHY, 0)]


async def test_monitor_uses_the_start_interval_inside_the_start_period() -> None:
    config = HealthConfig(("CMD", "x"), interval_s=30, start_period_s=10, start_interval_s=2, retries=1)
    times: list[float] = []

    async def probe() -> tuple[int, str]:
        return 1, ""

    async def on_result(state: HealthState, changed: str | None) -> None:
        times.append(trio.current_time())
    with trio.move_on_after(70):
        await monitor(config, probe, on_result, started_at=trio.current_time())
    assert times[:6] == [2, 4, 6, 8, 10, 40]


def test_health_flags_become_dockers_body() -> None:
    assert healthcheck_from_flags() is None
    assert healthcheck_from_flags(disable=True) == {"Test": ["NONE"]}
    assert healthcheck_from_flags(cmd="curl -f x", interval="1m30s", timeout="500ms", retries=4,
                                  start_period="2s") == {
        "Test": ["CMD-SHELL", "curl -f x"], "Interval": 90_000_000_000, "Timeout": 500_000_000, "Retries": 4,
        "StartPeriod": 2_000_000_000}
    assert healthcheck_from_flags(interval="5s") == {"Test": [], "Interval": 5_000_000_000}
    with pytest.raises(InvalidContainerConfig, match="conflicts"):
        healthcheck_from_flags(cmd="true", disable=True)
    with pytest.raises(InvalidContainerConfig, match="--health-interval"):
        healthcheck_from_flags(interval="10")
    with pytest.raises(InvalidContainerConfig, match="negative"):
        healthcheck_from_flags(retries=-1)
