"""`corral runtime run` exit statuses, death by signal, and kill's pidfd safety.

The container's exit status is what `run` exits with: the code itself, or
128+N when signal N killed the init. `kill` must reach the init it recorded
(PID and start time) or refuse; never a process that reused the PID.
"""

from __future__ import annotations

import json
import select
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from runtime.spawn import read_start_time

from .conftest import container_state, corral, run_detached, runtime_argv, wait_for

pytestmark = pytest.mark.root

TIMEOUT = 30


def status_of(state_root: Path, cid: str) -> str | None:
    out = corral(state_root, "state", cid)
    return json.loads(out.stdout)["status"] if out.returncode == 0 else None


def without_pid_namespace(config: dict) -> None:
    """The init is an ordinary process then: PID 1 of a namespace ignores unhandled signals."""
    config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"] if n["type"] != "pid"]


def is_alive(pid: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return raw[raw.rindex(b")") + 2:raw.rindex(b")") + 3] not in (b"Z", b"X")


# --- exit codes ------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 2, 3, 42, 126, 127, 128, 129, 200, 254, 255])
def test_run_exits_with_the_container_status(bundle, state_root, code):
    b = bundle.write(["sh", "-c", f"exit {code}"], cgroup="c")
    out = corral(state_root, "run", "-b", str(b), "c")
    assert (out.returncode, out.stdout, out.stderr) == (code, "", "")
    assert corral(state_root, "list", "-q").stdout == ""


def test_run_exit_status_sweep_0_to_255(bundle, state_root, tmp_path):
    """Every status, one `run` each (four at a time: about 30 runs a second)."""
    bundle.write(["true"], cgroup="unused")
    base = json.loads((bundle.path / "config.json").read_text())

    def one(code: int) -> tuple[int, int, str]:
        d = tmp_path / f"b{code}"
        d.mkdir()
        config = json.loads(json.dumps(base))
        config["process"]["args"] = ["sh", "-c", f"exit {code}"]
        config["linux"]["cgroupsPath"] = f"{bundle.cgroup_parent}/s{code}"
        (d / "config.json").write_text(json.dumps(config))
        out = corral(state_root, "run", "-b", str(d), f"s{code}")
        return code, out.returncode, out.stderr

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(one, range(256)))
    wrong = [(code, rc, err) for code, rc, err in results if rc != code or err]
    assert not wrong
    assert corral(state_root, "list", "-q").stdout == ""


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGINT, signal.SIGUSR1, signal.SIGTERM, signal.SIGKILL])
def test_run_exits_128_plus_signal_when_the_init_is_killed(bundle, state_root, sig):
    # Without a PID namespace the shell is not a namespace init, so it can kill itself.
    b = bundle.write(["sh", "-c", f"kill -{sig.name[3:]} $$; echo survived"], cgroup="c", edit=without_pid_namespace)
    out = corral(state_root, "run", "-b", str(b), "c")
    assert (out.returncode, out.stdout, out.stderr) == (128 + sig, "", "")


def test_foreground_run_killed_from_outside_exits_137(bundle, state_root):
    b = bundle.write(["sleep", "100"], cgroup="fg")
    proc = subprocess.Popen([*runtime_argv(state_root), "run", "-b", str(b), "fg"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: status_of(state_root, "fg") == "running", what="fg running")
        killed = corral(state_root, "kill", "fg", "KILL")
        assert (killed.returncode, killed.stderr) == (0, "")
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)
    assert (proc.returncode, stdout, stderr) == (137, "", "")
    assert corral(state_root, "list", "-q").stdout == ""


def test_foreground_run_forwards_sigterm_to_the_container(bundle, state_root):
    b = bundle.write(["sh", "-c", 'trap "exit 7" TERM; echo ready; while :; do sleep 0.1; done'], cgroup="fw")
    proc = subprocess.Popen([*runtime_argv(state_root), "run", "-b", str(b), "fw"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # The trap is set once "ready" is out; a TERM before that would be ignored by PID 1.
        ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
        assert ready, "the container never printed ready"
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)
    assert (proc.returncode, stderr) == (7, b"")


def test_kill_detached_container_stops_it(bundle, state_root, tmp_path):
    b = bundle.write(["sleep", "100"], cgroup="d")
    run_detached(state_root, b, "d", tmp_path)
    s = container_state(state_root, "d")
    assert s["status"] == "running" and s["pid"] > 0
    assert corral(state_root, "kill", "d", "KILL").returncode == 0
    wait_for(lambda: status_of(state_root, "d") == "stopped", what="d stopped")
    assert container_state(state_root, "d")["pid"] == 0
    assert not is_alive(s["pid"])
    assert corral(state_root, "delete", "d").returncode == 0
    assert corral(state_root, "list", "-q").stdout == ""


def test_kill_accepts_numbers_and_names(bundle, state_root, tmp_path):
    b = bundle.write(["sh", "-c", 'trap "exit 0" USR1; echo ready; while :; do sleep 0.1; done'], cgroup="n")
    run_detached(state_root, b, "n", tmp_path)
    # The trap must be in place before USR1 arrives: PID 1 ignores signals it has no handler for.
    wait_for(lambda: (tmp_path / "n.out").read_text() == "ready\n", what="the trap")
    assert corral(state_root, "kill", "n", "usr1").returncode == 0
    wait_for(lambda: status_of(state_root, "n") == "stopped", what="n stopped")
    assert corral(state_root, "delete", "n").returncode == 0

    b = bundle.write(["sleep", "100"], cgroup="n9")
    run_detached(state_root, b, "n9", tmp_path)
    assert corral(state_root, "kill", "n9", "9").returncode == 0
    wait_for(lambda: status_of(state_root, "n9") == "stopped", what="n9 stopped")
    assert corral(state_root, "delete", "n9").returncode == 0


def test_kill_unknown_signal_is_refused(bundle, state_root, tmp_path):
    b = bundle.write(["sleep", "100"], cgroup="u")
    run_detached(state_root, b, "u", tmp_path)
    out = corral(state_root, "kill", "u", "SIGBOGUS")
    assert out.returncode == 1
    assert out.stderr.startswith("corral runtime: ") and "SIGBOGUS" in out.stderr
    assert out.stderr.count("\n") == 1
    assert container_state(state_root, "u")["status"] == "running"
    assert corral(state_root, "delete", "-f", "u").returncode == 0


# --- pidfd safety ----------------------------------------------------------------


def test_kill_after_exit_refuses(bundle, state_root, tmp_path):
    b = bundle.write(["true"], cgroup="gone")
    run_detached(state_root, b, "gone", tmp_path)
    wait_for(lambda: status_of(state_root, "gone") == "stopped", what="gone stopped")
    out = corral(state_root, "kill", "gone", "KILL")
    assert (out.returncode, out.stderr) == (1, "corral runtime: container not running\n")
    assert corral(state_root, "delete", "gone").returncode == 0


def test_kill_refuses_a_recycled_pid(bundle, state_root, tmp_path):
    """A PID whose start time is not the recorded one is another process: never signal it."""
    b = bundle.write(["sleep", "100"], cgroup="victim")
    run_detached(state_root, b, "victim", tmp_path)
    pid = container_state(state_root, "victim")["pid"]
    started = read_start_time(pid)
    path = state_root / "victim" / "state.json"
    saved = json.loads(path.read_text())
    assert saved["pid"] == pid and saved["start_time"] == started
    # Simulate reuse: the recorded process "started" at another time than the one now at PID.
    path.write_text(json.dumps({**saved, "start_time": started + 1}))
    try:
        for sig in ("KILL", "TERM"):
            out = corral(state_root, "kill", "victim", sig)
            assert (out.returncode, out.stderr) == (1, "corral runtime: container not running\n")
        time.sleep(0.2)    # a wrongly sent SIGKILL would have landed by now
        assert is_alive(pid) and read_start_time(pid) == started
        s = container_state(state_root, "victim")
        assert (s["status"], s["pid"]) == ("stopped", 0)
    finally:
        path.write_text(json.dumps(saved))
    assert container_state(state_root, "victim")["status"] == "running"
    assert corral(state_root, "kill", "victim", "KILL").returncode == 0
    wait_for(lambda: not is_alive(pid), what="the real init to die")
    assert corral(state_root, "delete", "victim").returncode == 0


@pytest.mark.parametrize("every", [False, True], ids=["init", "--all"])
def test_kill_with_an_impossible_signal_number_is_one_line_error(bundle, state_root, tmp_path, every):
    b = bundle.write(["sleep", "100"], cgroup="big")
    run_detached(state_root, b, "big", tmp_path)
    try:
        out = corral(state_root, "kill", *(["--all"] if every else []), "big", "100")
        assert out.returncode == 1
        assert out.stderr.startswith("corral runtime: ") and out.stderr.count("\n") == 1, out.stderr
        assert "100" in out.stderr
        assert container_state(state_root, "big")["status"] == "running"
    finally:
        corral(state_root, "delete", "-f", "big")
