"""The cgroup v2 tests, run inside a user-mode-linux kernel (see tests/uml.py).

The host runs cgroup v1; ``test_cgroup_v2_suite_in_uml`` boots linux.uml with
the host filesystem as root and a cgroup2 hierarchy on /sys/fs/cgroup, and runs
``pytest -m cgroup_v2 --run-root`` there. A failing inner test fails this test,
with the inner pytest's output (tracebacks included) in the failure message.
"""

from __future__ import annotations

import faulthandler
import sys
from pathlib import Path

import pytest

try:
    from tests.uml import run_in_uml, uml_unavailable_reason
except ImportError:  # `pytest` run without the repository on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.uml import run_in_uml, uml_unavailable_reason

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.root


@pytest.fixture
def uml() -> None:
    reason = uml_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


def _python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def test_uml_harness_exit_status_and_cgroup2(uml: None) -> None:
    res = run_in_uml(
        ["sh", "-c", "cat /sys/fs/cgroup/cgroup.controllers; stat -fc %T /sys/fs/cgroup; exit 7"],
        cwd=str(REPO),
        timeout_s=120,
    )
    assert res.returncode == 7, res.output
    lines = res.output.splitlines()
    assert {"memory", "pids", "cpu", "io"} <= set(lines[0].split()), res.output
    assert lines[1] == "cgroup2fs", res.output


def test_cgroup_v2_suite_in_uml(uml: None) -> None:
    # Minutes by design (every cgroup_v2 test, in a slow kernel): re-arm pytest's hang dump.
    faulthandler.dump_traceback_later(900, exit=False)
    argv = [_python(), "-m", "pytest", "-q", "-rfEs", "--run-root", "-m", "cgroup_v2", "-p", "no:cacheprovider", "tests/"]
    res = run_in_uml(argv, cwd=str(REPO), timeout_s=900)
    if res.returncode == 5:
        pytest.fail(f"no cgroup_v2 test was collected inside user-mode-linux:\n{res.output}", pytrace=False)
    if res.returncode != 0:
        pytest.fail(
            f"cgroup_v2 tests failed inside user-mode-linux (pytest exit status {res.returncode}):\n{res.output}",
            pytrace=False,
        )
    if " passed" not in res.output:
        pytest.fail(f"no cgroup_v2 test passed inside user-mode-linux (all skipped?):\n{res.output}", pytrace=False)
