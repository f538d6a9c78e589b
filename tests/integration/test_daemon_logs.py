"""corral logs on the real kernel: json-file capture, rotation, tail, since/until, follow, restarts.

Each test runs its own daemon (``tests/integration/_daemon.py``).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from ._daemon import TIMEOUT, Daemon, daemon_fixture  # noqa: F401 - the `daemon` fixture
from .conftest import corral_command, wait_for

pytestmark = pytest.mark.root


def entries(daemon: Daemon, ref: str) -> list[dict]:
    """Every entry of the container's json-file log and its rotated copies, oldest first."""
    path = Path(daemon.inspect(ref)["LogPath"])
    files = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:])) + [path]
    return [json.loads(line) for f in files for line in f.read_bytes().splitlines()]


def test_stdout_and_stderr_are_kept_apart(daemon: Daemon) -> None:
    script = "echo out1; echo err1 >&2; echo out2; printf 'no newline'"
    run = daemon.cli("run", "--name", "sep", "busybox", "sh", "-c", script)
    assert run.returncode == 0, run.stderr
    assert (run.stdout, run.stderr) == ("out1\nout2\nno newline", "err1\n")
    out = daemon.cli("logs", "sep")
    assert (out.returncode, out.stdout, out.stderr) == (0, "out1\nout2\nno newline", "err1\n")
    docs = entries(daemon, "sep")
    assert [(d["stream"], d["log"]) for d in docs if d["stream"] == "stdout"] == [
        ("stdout", "out1\n"), ("stdout", "out2\n"), ("stdout", "no newline")]
    assert [d["log"] for d in docs if d["stream"] == "stderr"] == ["err1\n"]
    assert all(len(d["time"]) == 30 and d["time"].endswith("Z") for d in docs)
    assert Path(daemon.inspect("sep")["LogPath"]).name == "container-json.log"


def test_timestamps_and_tail(daemon: Daemon) -> None:
    daemon.ok("run", "--name", "tl", "busybox", "sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done")
    assert daemon.ok("logs", "--tail", "2", "tl") == "line4\nline5\n"
    assert daemon.ok("logs", "--tail", "0", "tl") == ""
    assert daemon.ok("logs", "--tail", "all", "tl") == "".join(f"line{i}\n" for i in range(1, 6))
    stamped = daemon.ok("logs", "-t", "--tail", "2", "tl").splitlines()
    times = [d["time"] for d in entries(daemon, "tl")][-2:]
    assert stamped == [f"{times[0]} line4", f"{times[1]} line5"]
    out = daemon.cli("logs", "--tail", "ten", "tl")
    assert out.returncode == 125 and "--tail" in out.stderr


def test_since_and_until(daemon: Daemon) -> None:
    daemon.ok("run", "--name", "su", "busybox", "sh", "-c", "echo early; sleep 1.5; echo late")
    docs = entries(daemon, "su")
    early, late = docs[0]["time"], docs[1]["time"]
    assert early < late
    assert daemon.ok("logs", "--since", late, "su") == "late\n"
    assert daemon.ok("logs", "--until", early, "su") == "early\n"
    assert daemon.ok("logs", "--since", early, "--until", early, "su") == "early\n"
    # Unix seconds with a fraction, and durations: everything is from the last minute.
    seconds = late[:19]
    unix = int(time.mktime(time.strptime(seconds, "%Y-%m-%dT%H:%M:%S"))) - time.timezone
    assert daemon.ok("logs", "--since", f"{unix}.{late[20:29]}", "su") == "late\n"
    assert daemon.ok("logs", "--since", "10m", "su") == "early\nlate\n"
    assert daemon.ok("logs", "--until", "1h", "su") == ""
    out = daemon.cli("logs", "--since", "yesterday-ish", "su")
    assert out.returncode == 125 and "failed to parse value as time or duration" in out.stderr


def test_follow_gets_later_lines_and_ends_when_the_container_stops(daemon: Daemon) -> None:
    daemon.ok("run", "-d", "--name", "fol", "busybox", "sh", "-c",
              "echo first; while [ ! -e /go ]; do sleep 0.05; done; echo second; "
              "while [ ! -e /stop ]; do sleep 0.05; done; echo third")
    follower = subprocess.Popen([*corral_command(), "-H", f"unix://{daemon.socket}", "logs", "-f", "fol"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert follower.stdout.readline() == "first\n"
        _touch(daemon, "fol", "go")
        assert follower.stdout.readline() == "second\n"
        assert follower.poll() is None                      # still following
        _touch(daemon, "fol", "stop")
        out, err = follower.communicate(timeout=TIMEOUT)
        assert (follower.returncode, out, err) == (0, "third\n", "")
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
    # -f of a stopped container prints what there is and ends.
    assert subprocess.run([*corral_command(), "-H", f"unix://{daemon.socket}", "logs", "-f", "fol"],
                          capture_output=True, text=True, timeout=TIMEOUT, check=False).stdout == "first\nsecond\nthird\n"


def _touch(daemon: Daemon, ref: str, name: str) -> None:
    """Create /NAME in the running container through its root mount (no dependency on exec)."""
    merged = Path(daemon.inspect(ref)["GraphDriver"]["Data"]["MergedDir"])
    (merged / name).touch()


def test_rotation_caps_the_files_and_logs_reads_across_them(daemon: Daemon) -> None:
    daemon.ok("run", "--name", "rot", "--log-opt", "max-size=1k", "--log-opt", "max-file=3", "busybox",
              "sh", "-c", "i=0; while [ $i -lt 300 ]; do echo line-$i; i=$((i+1)); done")
    path = Path(daemon.inspect("rot")["LogPath"])
    assert path.exists() and path.with_name(path.name + ".1").exists() and path.with_name(path.name + ".2").exists()
    assert not path.with_name(path.name + ".3").exists()
    for f in (path, path.with_name(path.name + ".1"), path.with_name(path.name + ".2")):
        assert f.stat().st_size < 1024 + 200                  # at most one entry past the limit
    lines = daemon.ok("logs", "rot").splitlines()
    # The newest entries survive, in order, without a gap, up to the last one.
    first = int(lines[0].removeprefix("line-"))
    assert lines == [f"line-{i}" for i in range(first, 300)] and 0 < first < 300 - 20
    assert daemon.ok("logs", "--tail", "25", "rot").splitlines() == [f"line-{i}" for i in range(275, 300)]
    assert daemon.inspect("rot")["HostConfig"]["LogConfig"] == {"Type": "json-file",
                                                                "Config": {"max-size": "1k", "max-file": "3"}}


def test_bad_log_options_are_refused_and_nothing_is_created(daemon: Daemon) -> None:
    for opts, message in ((["--log-opt", "max-size=abc"], "invalid value for log opt 'max-size': 'abc'"),
                          (["--log-opt", "max-file=2"], "max-file can only be used with max-size"),
                          (["--log-opt", "max-size=1m", "--log-opt", "max-file=0"], "max-file cannot be less than 1"),
                          (["--log-opt", "bogus=1"], "unknown log opt 'bogus'"),
                          (["--log-opt", "max-size"], "expected key=value"),
                          (["--log-driver", "syslog"], "logging driver 'syslog' is not supported")):
        out = daemon.cli("run", "--name", "bad", *opts, "busybox", "true")
        assert out.returncode == 125 and message in out.stderr, (opts, out.stderr)
    assert daemon.ok("ps", "-aq") == ""


def test_driver_none_keeps_no_log(daemon: Daemon) -> None:
    daemon.ok("run", "-d", "--name", "quiet", "--log-driver", "none", "busybox", "echo", "hidden")
    daemon.ok("wait", "quiet")
    assert daemon.inspect("quiet")["LogPath"] == ""
    out = daemon.cli("logs", "quiet")
    assert out.returncode == 125 and "configured logging driver does not support reading" in out.stderr


def test_logs_survive_a_daemon_restart(daemon: Daemon) -> None:
    daemon.ok("run", "--name", "keep", "busybox", "sh", "-c", "echo before restart; echo oops >&2")
    daemon.ok("run", "-d", "--name", "longer", "busybox", "sh", "-c", "echo still here; sleep 1000")
    wait_for(lambda: daemon.cli("logs", "longer").stdout == "still here\n", timeout=20, what="the running log")
    assert daemon.stop() == 0
    daemon.start()
    out = daemon.cli("logs", "keep")
    assert (out.stdout, out.stderr) == ("before restart\n", "oops\n")
    assert daemon.ok("logs", "longer") == "still here\n"
    daemon.ok("start", "keep")
    daemon.ok("wait", "keep")
    assert daemon.ok("logs", "keep") == "before restart\n" * 2


def test_a_container_writing_a_lot_loses_nothing(daemon: Daemon) -> None:
    size = 50_000_000
    # Lines of 100 bytes, then one long run without newlines (partial entries at 16 KiB).
    word = "0123456789" * 9 + "012345678"
    script = f"yes {word} | head -c {size // 2}; head -c {size // 2} /dev/zero | tr '\\0' x"
    daemon.ok("run", "-d", "--name", "lots", "busybox", "sh", "-c", script)
    assert daemon.cli("wait", "lots", timeout=120).stdout == "0\n"
    docs = entries(daemon, "lots")
    assert sum(len(d["log"]) for d in docs) == size
    assert max(len(d["log"]) for d in docs) == 16 * 1024
    # head cut the last "yes" line short; it and the x's are one open line, cut in 16 KiB pieces.
    open_line = size // 2 % (len(word) + 1) + size // 2
    assert docs[-1]["log"] == "x" * (open_line % (16 * 1024))
    out = subprocess.run([*corral_command(), "-H", f"unix://{daemon.socket}", "logs", "lots"],
                         capture_output=True, timeout=120, check=False)
    assert out.returncode == 0 and len(out.stdout) == size and out.stderr == b""
    assert out.stdout.endswith(b"x" * 1000)
