"""Named crash points: a test makes the daemon SIGKILL itself at exactly one step.

``CORRAL_TEST_CRASH_AT=NAME`` (or ``NAME@K``, the K-th time the step is
reached, 1-based) makes ``crash_point(NAME)`` write one line to stderr and
``os.kill(os.getpid(), SIGKILL)``: no ``finally``, no atexit, no SQLite
rollback, as when the kernel's OOM killer or an operator's ``kill -9`` takes
the daemon. Unset (every real run), ``crash_point`` is one comparison with
``None``. tests/integration/test_daemon_crash_steps.py drives them.

The points (docs/architecture.md lists them with what a restart must find):

- ``create:mid-dir``: the container directory half made, no record.
- ``create:before-record``: the directory complete, no record.
- ``create:after-record``: the record and its ``create`` event committed.
- ``start:before-event``: the first init exec'd, ``start`` not journaled.
- ``start:after-event``: the record says running, ``start`` journaled.
- ``restart:backoff``: ``restart`` journaled, sleeping the policy's delay.
- ``restart:before-event``: a restart's init exec'd, its ``start`` not journaled.
- ``remove:before-record``: the cgroup removed, the record still there.
- ``remove:after-record``: record deleted and ``destroy`` journaled, directory still there.
- ``journal:after-writes``: inside the SQLite transaction, the state rows
  written and the events not (so neither may survive).

Rejected: a signal from the test at a guessed moment (not deterministic);
raising an exception (runs ``finally`` blocks and cleanups a real crash skips).

Failure points are the other half: ``CORRAL_TEST_FAIL_AT=NAME`` makes
``fail_point(NAME)`` raise ``RuntimeError`` the first time the step is
reached, as a bug or a journal on a full disk would. A test then checks
that one container's failure leaves the daemon and the others running. The
point: ``exit:before-event``, a run ended and its ``die`` not yet journaled.
"""

from __future__ import annotations

import os
import signal
import sys

ENV = "CORRAL_TEST_CRASH_AT"
FAIL_ENV = "CORRAL_TEST_FAIL_AT"
_FAIL_AT: str | None = os.environ.get(FAIL_ENV) or None

_name, _, _nth = (os.environ.get(ENV) or "").partition("@")
_AT: str | None = _name or None
_NTH = int(_nth) if _nth.isdigit() and int(_nth) > 0 else 1
_seen = 0


def crash_point(name: str) -> None:
    """SIGKILL this process if ``CORRAL_TEST_CRASH_AT`` names this point (and this pass of it)."""
    if _AT is not None and _AT == name:
        _reached(name)


def _reached(name: str) -> None:
    global _seen
    _seen += 1
    if _seen == _NTH:
        # Written raw: the logging module may buffer or hold a lock we would die under.
        os.write(sys.stderr.fileno(), f"corral: crash point {name} (#{_seen}): SIGKILL\n".encode())
        os.kill(os.getpid(), signal.SIGKILL)


def fail_point(name: str) -> None:
    """Raise once if ``CORRAL_TEST_FAIL_AT`` names this point."""
    global _FAIL_AT
    if _FAIL_AT is not None and _FAIL_AT == name:
        _FAIL_AT = None
        raise RuntimeError(f"injected failure at {name} ({FAIL_ENV})")
