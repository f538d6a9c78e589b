"""cp, diff and export through `corral` on the real kernel (supervisor/files.py, runtime/archive.py).

Each test runs its own daemon (``tests/integration/_daemon.py``). What a copy
into a container did is checked from both sides: the container's own view
(it waits for the files and exits with a code that says what it saw) and the
upper dir on the host.
"""

from __future__ import annotations

import io
import os
import pty
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from runtime.images import BUSYBOX

from ._daemon import TIMEOUT, Daemon, daemon_fixture  # noqa: F401 - the `daemon` fixture
from .conftest import corral_command, wait_for

pytestmark = pytest.mark.root

SETUP = ("mkdir -p /data/sub && echo hello > /data/f.txt && chmod 640 /data/f.txt && chown 1234:5678 /data/f.txt"
         " && echo x > /data/sub/g && ln -s f.txt /data/link && touch /ready")


def _cli(daemon: Daemon, *args: str, input: bytes | None = None, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    """The CLI with bytes in and out (tar streams)."""
    return subprocess.run([*corral_command(), "-H", f"unix://{daemon.socket}", *args], input=input,
                          stdout=stdout, stderr=subprocess.PIPE, timeout=TIMEOUT, check=False,
                          stdin=None if input is not None else subprocess.DEVNULL)


def _fails(daemon: Daemon, *args: str, message: str) -> None:
    out = daemon.cli(*args)
    assert out.returncode == 125 and message in out.stderr, (args, out.returncode, out.stderr)


def _members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar}


def _tar(*files: tuple[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _mounted(path: str) -> bool:
    return any(line.split()[4] == path for line in Path("/proc/self/mountinfo").read_text().splitlines())


def _owner_mode(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def _ready(daemon: Daemon, name: str) -> None:
    wait_for(lambda: _cli(daemon, "cp", f"{name}:/ready", "-").returncode == 0, timeout=20,
             what=f"{name} to set up its files")


def test_cp_out_of_a_running_then_a_stopped_container(daemon: Daemon, tmp_path: Path) -> None:
    daemon.ok("run", "-d", "--name", "src", "busybox", "sh", "-c", SETUP + " && exec sleep 1000")
    _ready(daemon, "src")
    out = tmp_path / "out"
    out.mkdir()
    # A file onto a new name: content and mode; the owner is ours, or the source's with -a (docker's rule).
    daemon.ok("cp", "src:/data/f.txt", str(out / "f"))
    assert (out / "f").read_text() == "hello\n" and _owner_mode(out / "f") == (0, 0, 0o640)
    daemon.ok("cp", "-a", "src:/data/f.txt", str(out / "fa"))
    assert _owner_mode(out / "fa") == (1234, 5678, 0o640)
    # Into an existing directory: it keeps its name; onto a file: overwritten.
    daemon.ok("cp", "src:/data/f.txt", str(out))
    assert (out / "f.txt").read_text() == "hello\n"
    (out / "over").write_text("old contents, longer than the new")
    daemon.ok("cp", "src:/data/sub/g", str(out / "over"))
    assert (out / "over").read_text() == "x\n"
    # A directory onto a missing path: that directory, recursively, symlinks as symlinks.
    daemon.ok("cp", "src:/data", str(out / "copy"))
    assert (out / "copy/sub/g").read_text() == "x\n" and os.readlink(out / "copy/link") == "f.txt"
    assert sorted(os.listdir(out / "copy")) == ["f.txt", "link", "sub"]
    # Into an existing directory: inside it; with "/." only its contents.
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    daemon.ok("cp", "src:/data", str(tmp_path / "d1"))
    daemon.ok("cp", "src:/data/.", str(tmp_path / "d2"))
    assert os.listdir(tmp_path / "d1") == ["data"] and (tmp_path / "d1/data/sub/g").exists()
    assert sorted(os.listdir(tmp_path / "d2")) == ["f.txt", "link", "sub"]
    # "-": the tar itself, entries named by the base name, owners and modes in the headers.
    tar = _cli(daemon, "cp", "src:/data", "-")
    assert tar.returncode == 0, tar.stderr
    members = _members(tar.stdout)
    assert sorted(members) == ["data", "data/f.txt", "data/link", "data/sub", "data/sub/g"]
    f = members["data/f.txt"]
    assert (f.uid, f.gid, f.mode, f.size) == (1234, 5678, 0o640, 6)
    # Bad requests get clear errors.
    _fails(daemon, "cp", "src:/data", str(out / "f"), message="cannot copy a directory to a file")
    _fails(daemon, "cp", "src:/nope", str(out / "x"), message="could not find the file /nope in container")
    _fails(daemon, "cp", "src:/data/f.txt", str(tmp_path / "no/such/dir/f"), message="does not exist")
    _fails(daemon, "cp", "src:/a", "src:/b", message="copying between containers is not supported")
    # Stopped: the root is mounted for the copy and unmounted after it.
    daemon.ok("stop", "-t", "0", "src")
    merged = daemon.inspect("src")["GraphDriver"]["Data"]["MergedDir"]
    assert not _mounted(merged)
    daemon.ok("cp", "src:/data/sub/g", str(out / "g"))
    assert (out / "g").read_text() == "x\n"
    assert not _mounted(merged)


def test_cp_into_running_created_and_stopped_containers(daemon: Daemon, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d/inner").mkdir(parents=True)
    (src / "d/a").write_text("A")
    os.chmod(src / "d/a", 0o751)
    os.chown(src / "d/a", 4321, 99)
    (src / "d/inner/b").write_text("B")
    (src / "one.txt").write_text("1")
    os.chmod(src / "one.txt", 0o600)
    # The container waits for /tmp/done, then exits 7 only if every file is as copied.
    check = ('while [ ! -f /tmp/done ]; do sleep 0.1; done; '
             'test "$(cat /tmp/d/a)$(cat /tmp/c/inner/b)$(cat /renamed.txt)$(cat /tmp/done)" = AB1go && exit 7; exit 3')
    daemon.ok("run", "-d", "--name", "dst", "busybox", "sh", "-c", check)
    daemon.ok("cp", "-a", str(src / "d"), "dst:/tmp")                  # into a directory, owners kept
    daemon.ok("cp", str(src / "d") + "/.", "dst:/tmp/c")               # onto a missing path: made, with the contents
    daemon.ok("cp", str(src / "one.txt"), "dst:/renamed.txt")           # a file onto a missing name
    done = _cli(daemon, "cp", "-", "dst:/tmp", input=_tar(("done", b"go")))   # a tar on stdin
    assert done.returncode == 0, done.stderr
    assert daemon.ok("wait", "dst").strip() == "7"
    upper = Path(daemon.inspect("dst")["GraphDriver"]["Data"]["UpperDir"])
    assert _owner_mode(upper / "tmp/d/a") == (4321, 99, 0o751)
    assert _owner_mode(upper / "tmp/c/a") == (0, 0, 0o751)              # without -a: root's, as docker
    assert _owner_mode(upper / "renamed.txt") == (0, 0, 0o600)
    assert sorted(os.listdir(upper / "tmp/c")) == ["a", "inner"]
    # Stopped now: the copy still lands, in the upper dir.
    daemon.ok("cp", str(src / "one.txt"), "dst:/tmp/later.txt")
    assert (upper / "tmp/later.txt").read_text() == "1"
    _fails(daemon, "cp", str(src / "one.txt"), "dst:/nodir/", message="does not exist")
    _fails(daemon, "cp", str(src / "d"), "dst:/renamed.txt", message="cannot copy a directory to a file")
    _fails(daemon, "cp", str(tmp_path / "missing"), "dst:/tmp", message="no such file or directory")
    bad = _cli(daemon, "cp", "-", "dst:/renamed.txt", input=_tar(("x", b"x")))
    assert bad.returncode == 125 and b"must be a directory" in bad.stderr
    # A container that never ran: the file is there when it starts.
    daemon.ok("create", "--name", "fresh", "busybox", "sh", "-c", 'test "$(cat /etc/one.txt)" = 1 && exit 5')
    daemon.ok("cp", str(src / "one.txt"), "fresh:/etc/")
    daemon.ok("start", "fresh")
    assert daemon.ok("wait", "fresh").strip() == "5"


def test_a_running_container_is_copied_as_it_sees_itself(daemon: Daemon, tmp_path: Path) -> None:
    # Volumes and tmpfs are mounts in the container's namespace only: cp sees them as docker cp does.
    daemon.ok("run", "-d", "--name", "vols", "-v", "data:/vol", "--tmpfs", "/scratch", "busybox", "sh", "-c",
              "echo in-tmpfs > /scratch/t && touch /ready"
              " && while [ ! -f /vol/in ]; do sleep 0.1; done; test \"$(cat /vol/in)\" = payload && exit 7; exit 3")
    _ready(daemon, "vols")
    daemon.ok("cp", "vols:/scratch/t", str(tmp_path / "t"))
    assert (tmp_path / "t").read_text() == "in-tmpfs\n"
    (tmp_path / "in").write_text("payload")
    daemon.ok("cp", str(tmp_path / "in"), "vols:/vol/")
    assert daemon.ok("wait", "vols").strip() == "7"
    source = next(m["Source"] for m in daemon.inspect("vols")["Mounts"] if m["Destination"] == "/vol")
    assert (Path(source) / "in").read_text() == "payload"            # in the volume, not the upper dir
    upper = Path(daemon.inspect("vols")["GraphDriver"]["Data"]["UpperDir"])
    assert not (upper / "vol/in").exists()
    # The kernel's directories are the image's (empty), never /proc of the container.
    daemon.ok("run", "-d", "--name", "live", "busybox", "sleep", "1000")
    tar = _cli(daemon, "cp", "live:/", "-")
    assert tar.returncode == 0, tar.stderr
    names = set(_members(tar.stdout))
    assert {"proc", "sys", "dev", "bin/busybox"} <= names
    assert not any(n.startswith(("proc/", "sys/")) for n in names)


@pytest.mark.parametrize("state", ["created", "exited", "running"])
def test_cp_reaches_the_volumes_of_a_container_running_or_not(daemon: Daemon, tmp_path: Path, state: str) -> None:
    # Docker resolves a cp path through the container's mounts even when it is stopped:
    # a named volume, a bind and a read-only bind, in and out.
    bind, robind = tmp_path / "bind", tmp_path / "robind"
    bind.mkdir()
    robind.mkdir()
    (bind / "from-host").write_text("host side")
    (tmp_path / "in.txt").write_text("payload")
    daemon.ok("run", "--rm", "-v", "vol:/data", "busybox", "sh", "-c", "echo earlier > /data/earlier")
    mounts = ("-v", "vol:/data", "-v", f"{bind}:/bind", "-v", f"{robind}:/robind:ro")
    if state == "created":
        daemon.ok("create", "--name", "cpv", *mounts, "busybox", "true")
    elif state == "exited":
        daemon.ok("run", "--name", "cpv", *mounts, "busybox", "true")
    else:
        daemon.ok("run", "-d", "--name", "cpv", *mounts, "busybox", "sleep", "1000")
    info = daemon.inspect("cpv")
    assert info["State"]["Status"] == state
    volume = Path(next(m["Source"] for m in info["Mounts"] if m["Destination"] == "/data"))
    upper = Path(info["GraphDriver"]["Data"]["UpperDir"])
    # In: the file lands in the volume and in the bind's directory, never in the upper dir.
    daemon.ok("cp", str(tmp_path / "in.txt"), "cpv:/data/")
    daemon.ok("cp", str(tmp_path / "in.txt"), "cpv:/bind/copied.txt")
    assert (volume / "in.txt").read_text() == "payload" and not (upper / "data/in.txt").exists()
    assert (bind / "copied.txt").read_text() == "payload" and not (upper / "bind/copied.txt").exists()
    # Out: what another container wrote into the volume, what the host put in the bind.
    daemon.ok("cp", "cpv:/data/earlier", str(tmp_path / "earlier"))
    assert (tmp_path / "earlier").read_text() == "earlier\n"
    daemon.ok("cp", "cpv:/bind/from-host", str(tmp_path / "from-host"))
    assert (tmp_path / "from-host").read_text() == "host side"
    tar = _cli(daemon, "cp", "cpv:/data/.", "-")
    assert tar.returncode == 0, tar.stderr
    assert {"data/earlier", "data/in.txt"} <= set(_members(tar.stdout))
    # A read-only bind takes nothing, and nothing ends up under it in the upper dir either.
    out = daemon.cli("cp", str(tmp_path / "in.txt"), "cpv:/robind/")
    assert out.returncode == 125 and "read-only file system" in out.stderr.lower(), out.stderr
    assert os.listdir(robind) == [] and not (upper / "robind/in.txt").exists()
    # The container is unaffected, and it sees the copy in its volume.
    assert daemon.inspect("cpv")["State"]["Status"] == state
    assert daemon.ok("run", "--rm", "-v", "vol:/data", "busybox", "cat", "/data/in.txt") == "payload"
    assert not any(line.split()[4].startswith(str(upper.parent)) and line.split()[4] != str(upper.parent / "rootfs")
                   for line in Path("/proc/self/mountinfo").read_text().splitlines()), "a cp mount was left behind"


@pytest.mark.parametrize("state", ["exited", "running"])
def test_a_read_only_container_takes_files_into_its_volumes_only(daemon: Daemon, tmp_path: Path, state: str) -> None:
    (tmp_path / "in.txt").write_text("payload")
    args = ("--name", "rofs", "--read-only", "-v", "vol:/data", "busybox")
    if state == "exited":
        daemon.ok("run", *args, "true")
    else:
        daemon.ok("run", "-d", *args, "sleep", "1000")
    out = daemon.cli("cp", str(tmp_path / "in.txt"), "rofs:/tmp/")
    assert out.returncode == 125 and "read-only file system" in out.stderr.lower(), out.stderr
    daemon.ok("cp", str(tmp_path / "in.txt"), "rofs:/data/")
    assert daemon.ok("run", "--rm", "-v", "vol:/data", "busybox", "cat", "/data/in.txt") == "payload"


def test_paths_escaping_the_root_are_refused_and_the_container_is_unaffected(daemon: Daemon, tmp_path: Path) -> None:
    daemon.ok("run", "-d", "--name", "esc", "busybox", "sh", "-c",
              "ln -s ../../../../../../etc /up && ln -s /etc /abs && echo mine > /etc/mine && touch /ready"
              " && exec sleep 1000")
    _ready(daemon, "esc")
    local = tmp_path / "f"
    local.write_text("payload")
    _fails(daemon, "cp", "esc:/up/passwd", str(tmp_path / "stolen"), message="leaves the container's root")
    _fails(daemon, "cp", "-L", "esc:/up", str(tmp_path / "stolen"), message="leaves the container's root")
    _fails(daemon, "cp", str(local), "esc:/up/", message="leaves the container's root")
    _fails(daemon, "cp", str(local), "esc:/up/corral-escape-test", message="leaves the container's root")
    assert not (tmp_path / "stolen").exists() and not Path("/etc/corral-escape-test").exists()
    evil = _cli(daemon, "cp", "-", "esc:/tmp", input=_tar(("../../../corral-escape-test", b"x")))
    assert evil.returncode == 125 and b"contains '..'" in evil.stderr
    assert not Path("/corral-escape-test").exists()
    # Inside the root, links resolve inside it: /abs is the container's /etc, and a
    # user's ".." stops at the root (docker's Clean).
    daemon.ok("cp", "esc:/abs/mine", str(tmp_path / "mine"))
    daemon.ok("cp", "esc:../../../etc/mine", str(tmp_path / "mine2"))
    assert (tmp_path / "mine").read_text() == (tmp_path / "mine2").read_text() == "mine\n"
    # The escaping link itself may be copied (it is only a name), as docker does.
    daemon.ok("cp", "esc:/up", str(tmp_path / "link"))
    assert os.readlink(tmp_path / "link") == "../../../../../../etc"
    state = daemon.inspect("esc")["State"]
    assert state["Running"] and state["Status"] == "running"
    daemon.ok("cp", str(local), "esc:/tmp/after")
    assert _cli(daemon, "cp", "esc:/tmp/after", "-").returncode == 0


def test_diff_lists_what_changed_as_docker_prints_it(daemon: Daemon) -> None:
    daemon.ok("run", "--name", "chg", "busybox", "sh", "-c",
              "mkdir /new && echo 1 > /new/f && echo 2 > /tmp/t && rm /bin/ls && rm -r /root && mkdir /root"
              " && touch /root/r")
    # /bin/ls and the old /root are overlay whiteouts (char 0:0) and an opaque dir in the upper dir.
    assert daemon.ok("diff", "chg").splitlines() == [
        "C /bin", "D /bin/ls", "A /new", "A /new/f", "D /root", "A /root/r", "C /tmp", "A /tmp/t"]
    upper = Path(daemon.inspect("chg")["GraphDriver"]["Data"]["UpperDir"])
    st = os.lstat(upper / "bin/ls")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    # A fresh container has no changes (the runtime's own mount targets are not listed).
    daemon.ok("run", "--name", "clean", "busybox", "true")
    assert daemon.ok("diff", "clean") == ""
    _fails(daemon, "diff", "nosuch", message="no such container")


def test_export_writes_the_merged_filesystem(daemon: Daemon, tmp_path: Path) -> None:
    daemon.ok("run", "--name", "exp", "busybox", "sh", "-c", "echo written > /tmp/w && rm /bin/ls")
    daemon.ok("export", "-o", str(tmp_path / "exp.tar"), "exp")
    members = _members((tmp_path / "exp.tar").read_bytes())
    busybox = members["bin/busybox"]
    assert busybox.isreg() and busybox.size == BUSYBOX.stat().st_size and busybox.mode == 0o755
    assert members["bin/sh"].issym() and members["tmp/w"].size == len("written\n")
    assert "bin/ls" not in members and "bin/cat" in members
    with tarfile.open(tmp_path / "exp.tar") as tar:
        assert tar.extractfile("tmp/w").read() == b"written\n"
    # Without -o: stdout, when it is not a terminal.
    piped = _cli(daemon, "export", "exp")
    assert piped.returncode == 0 and set(_members(piped.stdout)) == set(members)
    # A reader that stops early (| head): a quiet end, no daemon error.
    cmd = " ".join([*corral_command(), "-H", f"unix://{daemon.socket}", "export", "exp"])
    early = subprocess.run(["bash", "-c", f"set -o pipefail; {cmd} | head -c 100 > /dev/null"],
                           capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert early.returncode == 1 and early.stderr == "", early.stderr
    assert daemon.ok("cp", "exp:/tmp/w", "-")                    # the daemon goes on
    # A terminal: refused, as docker does.
    master, slave = pty.openpty()
    try:
        refused = _cli(daemon, "export", "exp", stdout=slave)
    finally:
        os.close(slave)
        os.close(master)
    assert refused.returncode == 1 and b"cowardly refusing to save to a terminal" in refused.stderr
