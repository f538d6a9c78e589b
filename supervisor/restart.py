"""Restart policies: Docker's meanings, moby's backoff, systemd's start limit. Pure.

Docker (moby daemon/restartmanager):

- ``no``: never restart.
- ``on-failure[:N]``: restart when the exit code is not 0, at most N times (N=0: no bound).
- ``always``: restart whatever the exit code.
- ``unless-stopped``: as ``always``, but a container the user stopped stays
  stopped across a daemon restart too.
- A user's stop (or kill) is never undone by any policy.

Delay: 100 ms, doubled after each restart, capped at 60 s, back to 100 ms once a
run lasted 10 s. We add jitter (x0.8..1.2, so a fleet that died together does
not restart in lockstep) and a start limit (systemd's StartLimitBurst): a
container started ``burst`` times within ``interval_s`` is parked, with the
reason, until someone starts it by hand.

Everything here is a function of its arguments (the clock and the random draw
come in as values), so the table tests need neither time nor trio.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BACKOFF_START_S = 0.1
BACKOFF_MAX_S = 60.0
STABLE_AFTER_S = 10.0
JITTER = (0.8, 1.2)
START_LIMIT_BURST = 10
START_LIMIT_INTERVAL_S = 60.0

POLICIES = ("no", "on-failure", "always", "unless-stopped")


@dataclass(frozen=True)
class RestartPolicy:
    name: str = "no"
    max_retries: int = 0          # on-failure only; 0 means no bound

    def __str__(self) -> str:
        if self.name == "on-failure" and self.max_retries:
            return f"on-failure:{self.max_retries}"
        return self.name


def parse_restart_policy(text: str) -> RestartPolicy:
    """``no``, ``on-failure[:N]``, ``always``, ``unless-stopped`` (Docker's --restart).

    Raises:
        ValueError: with Docker's wording for an unknown name or a bad count.
    """
    name, _, count = (text or "no").partition(":")
    if name not in POLICIES:
        raise ValueError(f"invalid restart policy {text!r}: use one of no, on-failure[:max-retries], always, unless-stopped")
    if count:
        if name != "on-failure":
            raise ValueError(f"maximum retry count cannot be used with restart policy {name!r}")
        if not count.isdigit():
            raise ValueError(f"invalid maximum retry count {count!r} in restart policy {text!r}")
        return RestartPolicy(name, int(count))
    return RestartPolicy(name)


@dataclass(frozen=True)
class RestartState:
    """What the decision needs to remember between runs of one container."""

    restart_count: int = 0
    backoff_s: float = BACKOFF_START_S
    starts: tuple[float, ...] = field(default_factory=tuple)   # monotonic times of recent starts


@dataclass(frozen=True)
class Decision:
    restart: bool
    delay_s: float = 0.0
    state: RestartState = field(default_factory=RestartState)
    reason: str = ""              # why not, or "parked: ..." when the start limit hit


def record_start(state: RestartState, now: float, *, interval_s: float = START_LIMIT_INTERVAL_S) -> RestartState:
    """Remember a start at ``now``, forgetting the ones older than the start-limit window."""
    recent = tuple(t for t in state.starts if now - t < interval_s) + (now,)
    return RestartState(state.restart_count, state.backoff_s, recent)


def decide(policy: RestartPolicy, state: RestartState, *, exit_code: int, ran_s: float, now: float,
           stopped_by_user: bool, jitter: float = 1.0,
           burst: int = START_LIMIT_BURST, interval_s: float = START_LIMIT_INTERVAL_S) -> Decision:
    """Whether and when to restart a container that just exited.

    Args:
        policy: the container's restart policy.
        state: what earlier decisions left (``record_start`` adds each start).
        exit_code: the exit status (128+N for signal N).
        ran_s: how long this run lasted.
        now: the monotonic clock, for the start-limit window.
        stopped_by_user: a stop/kill from the user ended it: never restart.
        jitter: a factor drawn from ``JITTER`` by the caller (1.0 in tests).

    Returns:
        The decision; ``state`` in it replaces the caller's.
    """
    if stopped_by_user:
        return Decision(False, state=state, reason="stopped by the user")
    if policy.name == "no":
        return Decision(False, state=state, reason="restart policy is no")
    if policy.name == "on-failure":
        if exit_code == 0:
            return Decision(False, state=state, reason="exited with status 0 (on-failure)")
        if policy.max_retries and state.restart_count >= policy.max_retries:
            return Decision(False, state=state, reason=f"gave up after {state.restart_count} restarts ({policy})")
    recent = [t for t in state.starts if now - t < interval_s]
    if len(recent) >= burst:
        return Decision(False, state=state,
                        reason=f"parked: started {len(recent)} times within {interval_s:g} s (start limit)")
    # moby: a run of 10 s or more resets the backoff; otherwise it doubles.
    backoff = BACKOFF_START_S if ran_s >= STABLE_AFTER_S else state.backoff_s
    delay = min(BACKOFF_MAX_S, backoff * jitter)
    next_state = RestartState(state.restart_count + 1, min(BACKOFF_MAX_S, backoff * 2), tuple(recent))
    return Decision(True, delay, next_state)


def restart_on_daemon_start(policy: RestartPolicy, *, stopped_by_user: bool, was_running: bool,
                            exit_code: int | None, restart_count: int = 0) -> bool:
    """After a daemon restart, whether a container that is not running is started again (moby's restore).

    ``always`` and ``unless-stopped`` come back unless the user stopped them;
    ``on-failure`` comes back if it was running or had failed, and only while
    ``restart_count`` (restarts made since the user's last start) is below
    its bound, so a crash never buys extra retries; ``no`` never.
    """
    if stopped_by_user or policy.name == "no":
        return False
    if policy.name in ("always", "unless-stopped"):
        return True
    if policy.max_retries and restart_count >= policy.max_retries:
        return False
    return was_running or (exit_code is not None and exit_code != 0)
