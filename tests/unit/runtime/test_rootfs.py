"""Mount choreography, recorded without root: order, flags, and paths kept inside the rootfs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from protocols.runtime_spec import parse_spec
from runtime import _syscalls as real
from runtime.errors import MountError
from runtime.mounts import parse_mount_options
from runtime.rootfs import finalize_rootfs, mount_binds, mount_rootfs, pivot_to, secure_join


class RecordingSyscalls:
    """Stands in for runtime._syscalls: records mount-family calls, changes nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def mount(self, source, target, fstype, flags=0, data=None):
        self.calls.append(("mount", source, target, fstype, flags, data))

    def umount2(self, target, flags=0):
        self.calls.append(("umount2", target, flags))

    def pivot_root(self, new_root, put_old):
        self.calls.append(("pivot_root", new_root, put_old))

    def move_mount(self, from_fd, to_path, flags=real.MOVE_MOUNT_F_EMPTY_PATH):
        self.calls.append(("move_mount", from_fd, to_path))


def spec_with(mounts: list[dict], **linux) -> object:
    return parse_spec({
        "ociVersion": "1.0.2", "root": {"path": "rootfs", "readonly": linux.pop("readonly", False)},
        "process": {"args": ["true"], "cwd": "/work/dir"},
        "mounts": mounts, "linux": {"namespaces": [{"type": "mount"}], **linux},
    })


def test_parse_mount_options_splits_flags_propagation_and_data() -> None:
    opts = parse_mount_options(["nosuid", "strictatime", "mode=755", "size=65536k", "rprivate", "ro", "rw"])
    assert opts.flags == real.MS_NOSUID | real.MS_STRICTATIME   # "rw" after "ro" clears it
    assert opts.propagation == (real.MS_PRIVATE | real.MS_REC,)
    assert opts.data == "mode=755,size=65536k"
    assert parse_mount_options(["rbind", "ro"]).flags == real.MS_BIND | real.MS_REC | real.MS_RDONLY
    assert parse_mount_options([]).data is None


def test_secure_join_keeps_every_path_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "abs").symlink_to("/etc")                  # absolute: resolved against the rootfs
    (root / "up").symlink_to("../../../../outside")    # climbs: stops at the rootfs
    (root / "loop").symlink_to("loop")
    assert secure_join(str(root), "/abs/passwd") == str(root / "etc/passwd")
    assert secure_join(str(root), "/up/x") == str(root / "outside/x")
    assert secure_join(str(root), "../../etc/../../proc") == str(root / "proc")
    assert secure_join(str(root), "/new/dir") == str(root / "new/dir")
    with pytest.raises(MountError, match="too many levels of symbolic links"):
        secure_join(str(root), "/loop/x")


def test_mount_rootfs_order(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    (root / "sys").symlink_to("/host-escape")     # a hostile image: the mount must stay inside
    src = tmp_path / "data"
    src.mkdir()
    spec = spec_with([
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "ro"]},
        {"destination": "/data", "type": "bind", "source": str(src), "options": ["rbind", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro", "nosuid"]},
    ])
    sc = RecordingSyscalls()
    sources = [("cpu,cpuacct", Path("/sys/fs/cgroup/cpu,cpuacct/corral/x")), ("memory", Path("/sys/fs/cgroup/memory/corral/x"))]
    mount_rootfs(spec, str(root), bundle=str(tmp_path), cgroup_sources=sources, sc=sc)
    r = str(root)
    assert sc.calls[0] == ("mount", None, "/", None, real.MS_SLAVE | real.MS_REC, None)
    assert sc.calls[1] == ("mount", r, r, None, real.MS_BIND | real.MS_REC, None)
    assert sc.calls[2] == ("mount", "proc", f"{r}/proc", "proc", 0, None)
    assert sc.calls[3] == ("mount", "sysfs", f"{r}/host-escape", "sysfs", real.MS_NOSUID | real.MS_RDONLY, None)
    # A bind takes its other flags only on a remount (mount(2)).
    assert sc.calls[4] == ("mount", str(src), f"{r}/data", None, real.MS_BIND | real.MS_REC, None)
    assert sc.calls[5][:4] == ("mount", str(src), f"{r}/data", None)
    assert sc.calls[5][4] & (real.MS_REMOUNT | real.MS_RDONLY | real.MS_BIND) == real.MS_REMOUNT | real.MS_RDONLY | real.MS_BIND
    # v1 cgroups: a tmpfs, then one read-only bind per hierarchy, co-mounted names linked.
    cg = f"{r}/host-escape/fs/cgroup"
    assert sc.calls[6] == ("mount", "tmpfs", cg, "tmpfs", real.MS_NOSUID | real.MS_NODEV | real.MS_NOEXEC, "mode=755")
    assert [c[2] for c in sc.calls[7:]] == [f"{cg}/cpu,cpuacct"] * 2 + [f"{cg}/memory"] * 2
    assert os.readlink(f"{cg}/cpu") == "cpu,cpuacct" and os.readlink(f"{cg}/cpuacct") == "cpu,cpuacct"
    assert (root / "work/dir").is_dir()                    # the cwd is created
    assert not Path("/host-escape").exists()


def test_a_devpts_instance_of_the_daemons_is_attached_at_dev_pts(tmp_path: Path) -> None:
    # run -t: the terminal's instance (runtime/terminal.py rule 1) instead of a new one; once only.
    root = tmp_path / "rootfs"
    root.mkdir()
    devpts = {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666"]}
    spec = spec_with([{"destination": "/proc", "type": "proc", "source": "proc"}, devpts,
                      {**devpts, "destination": "/dev/pts2"}])
    sc = RecordingSyscalls()
    mount_rootfs(spec, str(root), bundle=str(tmp_path), cgroup_sources=[], devpts=42, sc=sc)
    r = str(root)
    assert sc.calls[2][:3] == ("mount", "proc", f"{r}/proc")
    assert sc.calls[3] == ("move_mount", 42, f"{r}/dev/pts")
    assert sc.calls[4] == ("mount", "devpts", f"{r}/dev/pts2", "devpts", real.MS_NOSUID | real.MS_NOEXEC,
                           "newinstance,ptmxmode=0666")
    assert (root / "dev/pts").is_dir()
    # Without one, /dev/pts is a new instance as before.
    sc = RecordingSyscalls()
    mount_rootfs(spec, str(root), bundle=str(tmp_path), cgroup_sources=[], sc=sc)
    assert sc.calls[3][:4] == ("mount", "devpts", f"{r}/dev/pts", "devpts")


def test_missing_bind_source_is_named(tmp_path: Path) -> None:
    (tmp_path / "rootfs").mkdir()
    spec = spec_with([{"destination": "/data", "type": "bind", "source": "/nonexistent/src", "options": ["rbind"]}])
    with pytest.raises(MountError, match="bind mount source /nonexistent/src for /data does not exist"):
        mount_rootfs(spec, str(tmp_path / "rootfs"), bundle=str(tmp_path), cgroup_sources=[], sc=RecordingSyscalls())


def test_mount_binds_mounts_the_binds_only_then_the_root_read_only(tmp_path: Path) -> None:
    # cp's view of a stopped container (runtime.archive.open_container_root).
    root = tmp_path / "rootfs"
    root.mkdir()
    vol, hosts = tmp_path / "vol", tmp_path / "hosts"
    vol.mkdir()
    hosts.write_text("127.0.0.1 localhost\n")
    spec = spec_with([
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/dev/shm", "type": "bind", "source": str(vol), "options": ["rbind"]},
        {"destination": "/etc/hosts", "type": "bind", "source": str(hosts), "options": ["rbind", "rprivate"]},
        {"destination": "/data", "source": str(vol), "options": ["rbind", "ro"]},
        {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs"},
    ], readonly=True)
    sc = RecordingSyscalls()
    mount_binds(spec, str(root), bundle=str(tmp_path), sc=sc)
    r = str(root)
    # No kernel filesystem, no tmpfs, nothing under /dev: the binds, each as mount_rootfs mounts it.
    assert [c[2] for c in sc.calls] == [f"{r}/etc/hosts"] * 2 + [f"{r}/data"] * 2 + [r]
    assert sc.calls[0] == ("mount", str(hosts), f"{r}/etc/hosts", None, real.MS_BIND | real.MS_REC, None)
    assert sc.calls[1] == ("mount", None, f"{r}/etc/hosts", None, real.MS_PRIVATE | real.MS_REC, None)
    assert (root / "etc/hosts").is_file() and (root / "data").is_dir()        # the mount points
    assert sc.calls[3][4] & (real.MS_REMOUNT | real.MS_RDONLY) == real.MS_REMOUNT | real.MS_RDONLY
    # The root last: read-only over the binds, which keep their own flags.
    assert sc.calls[4][4] & (real.MS_BIND | real.MS_REMOUNT | real.MS_RDONLY) == \
        real.MS_BIND | real.MS_REMOUNT | real.MS_RDONLY
    assert not (root / "proc").exists() and not (root / "scratch").exists()


def test_pivot_detaches_the_old_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sc = RecordingSyscalls()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "chdir", lambda path: sc.calls.append(("chdir", path)))
    pivot_to("/new/root", sc=sc)
    assert sc.calls == [("chdir", "/new/root"), ("pivot_root", ".", "."), ("umount2", ".", real.MNT_DETACH), ("chdir", "/")]


def test_finalize_masks_and_makes_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # finalize_rootfs runs after pivot_root, with absolute paths; point them into tmp_path.
    (tmp_path / "proc/sys").mkdir(parents=True)
    (tmp_path / "proc/keys").write_text("")
    spec = spec_with([], readonly=True,
                     readonlyPaths=[f"{tmp_path}/proc/sys", f"{tmp_path}/proc/missing"],
                     maskedPaths=[f"{tmp_path}/proc/keys", f"{tmp_path}/proc/sys", f"{tmp_path}/nope"])
    sc = RecordingSyscalls()
    finalize_rootfs(spec, sc=sc)
    ro, keys, sysdir, root = f"{tmp_path}/proc/sys", f"{tmp_path}/proc/keys", f"{tmp_path}/proc/sys", "/"
    assert [c[1:4] for c in sc.calls] == [
        (ro, ro, None), (ro, ro, None),                 # bind, then read-only remount
        ("/dev/null", keys, None),                      # a masked file: /dev/null over it
        ("tmpfs", sysdir, "tmpfs"),                     # a masked directory: an empty read-only tmpfs
        (None, root, None),                             # the read-only root, last
    ]
    assert sc.calls[1][4] & real.MS_RDONLY and sc.calls[1][4] & real.MS_REMOUNT
    assert sc.calls[-1][4] & (real.MS_RDONLY | real.MS_REMOUNT | real.MS_BIND) == real.MS_RDONLY | real.MS_REMOUNT | real.MS_BIND
