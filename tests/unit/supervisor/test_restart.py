"""Restart decisions as a table: Docker's policies, moby's backoff, the start limit."""

from __future__ import annotations

import pytest

from supervisor.restart import (
    BACKOFF_MAX_S, JITTER, RestartPolicy, RestartState, decide, parse_restart_policy, record_start,
    restart_on_daemon_start,
)


@pytest.mark.parametrize(("text", "policy"), [
    ("no", RestartPolicy("no")), ("", RestartPolicy("no")), ("always", RestartPolicy("always")),
    ("unless-stopped", RestartPolicy("unless-stopped")), ("on-failure", RestartPolicy("on-failure", 0)),
    ("on-failure:3", RestartPolicy("on-failure", 3)),
])
def test_parse(text: str, policy: RestartPolicy) -> None:
    assert parse_restart_policy(text) == policy


@pytest.mark.parametrize(("text", "message"), [
    ("sometimes", "invalid restart policy 'sometimes'"),
    ("always:3", "maximum retry count cannot be used with restart policy 'always'"),
    ("on-failure:x", "invalid maximum retry count 'x'"),
    ("on-failure:-1", "invalid maximum retry count '-1'"),
])
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_restart_policy(text)


def run(policy: str, exit_code: int, state: RestartState = RestartState(), *, ran_s: float = 1.0,
        now: float = 1000.0, stopped_by_user: bool = False):
    return decide(parse_restart_policy(policy), state, exit_code=exit_code, ran_s=ran_s, now=now,
                  stopped_by_user=stopped_by_user)


@pytest.mark.parametrize(("policy", "exit_code", "restart"), [
    ("no", 1, False), ("no", 0, False),
    ("on-failure", 0, False), ("on-failure", 1, True), ("on-failure", 137, True),
    ("always", 0, True), ("always", 1, True),
    ("unless-stopped", 0, True), ("unless-stopped", 2, True),
])
def test_policy_table(policy: str, exit_code: int, restart: bool) -> None:
    assert run(policy, exit_code).restart is restart


@pytest.mark.parametrize("policy", ["always", "unless-stopped", "on-failure"])
def test_a_user_stop_is_never_undone(policy: str) -> None:
    d = run(policy, 137, stopped_by_user=True)
    assert not d.restart and d.reason == "stopped by the user"


def test_on_failure_n_restarts_exactly_n_times() -> None:
    state, restarts, now = RestartState(), 0, 0.0
    while True:
        d = run("on-failure:3", 1, state, now=now)
        if not d.restart:
            break
        restarts += 1
        state = record_start(d.state, now)
        now += 100.0                  # far apart: the start limit never bites
    assert restarts == 3
    assert "gave up after 3 restarts" in d.reason


def test_backoff_doubles_caps_and_resets_after_a_stable_run() -> None:
    state, delays = RestartState(), []
    for i in range(12):
        d = run("always", 1, state, now=i * 1000.0)
        delays.append(d.delay_s)
        state = d.state
    assert delays[:4] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert delays[-1] == BACKOFF_MAX_S and max(delays) == BACKOFF_MAX_S
    d = run("always", 1, state, ran_s=10.0, now=1e6)
    assert d.delay_s == pytest.approx(0.1)
    assert d.state.backoff_s == pytest.approx(0.2)


@pytest.mark.parametrize("factor", JITTER)
def test_jitter_stays_in_bounds(factor: float) -> None:
    d = decide(RestartPolicy("always"), RestartState(backoff_s=BACKOFF_MAX_S), exit_code=1, ran_s=0, now=0,
               stopped_by_user=False, jitter=factor)
    assert 0.8 * BACKOFF_MAX_S <= d.delay_s <= BACKOFF_MAX_S


def test_start_limit_parks_a_crash_loop_with_the_reason() -> None:
    state, now, restarts = RestartState(), 0.0, 0
    state = record_start(state, now)
    while True:
        d = decide(RestartPolicy("always"), state, exit_code=1, ran_s=0.01, now=now, stopped_by_user=False,
                   burst=5, interval_s=10.0)
        if not d.restart:
            break
        now += d.delay_s
        state = record_start(d.state, now)
        restarts += 1
    assert restarts == 4                       # 5 starts in all within 10 s
    assert d.reason == "parked: started 5 times within 10 s (start limit)"


def test_starts_outside_the_window_are_forgotten() -> None:
    state = RestartState()
    for t in (0.0, 1.0, 2.0):
        state = record_start(state, t, interval_s=10.0)
    assert record_start(state, 11.5, interval_s=10.0).starts == (2.0, 11.5)


@pytest.mark.parametrize(("policy", "stopped", "was_running", "exit_code", "expected"), [
    ("always", False, False, 0, True), ("always", True, True, None, False),
    ("unless-stopped", False, True, None, True), ("unless-stopped", True, False, 0, False),
    ("on-failure", False, True, None, True), ("on-failure", False, False, 0, False),
    ("on-failure", False, False, 3, True), ("no", False, True, None, False),
])
def test_daemon_start(policy, stopped, was_running, exit_code, expected) -> None:
    assert restart_on_daemon_start(parse_restart_policy(policy), stopped_by_user=stopped,
                                   was_running=was_running, exit_code=exit_code) is expected


@pytest.mark.parametrize(("policy", "restart_count", "expected"), [
    ("on-failure:3", 2, True), ("on-failure:3", 3, False), ("on-failure", 50, True), ("always", 50, True),
])
def test_daemon_start_never_adds_retries(policy, restart_count, expected) -> None:
    # A container the crash killed counts its restarts so far: on-failure:N stays at N in total.
    assert restart_on_daemon_start(parse_restart_policy(policy), stopped_by_user=False, was_running=True,
                                   exit_code=None, restart_count=restart_count) is expected
