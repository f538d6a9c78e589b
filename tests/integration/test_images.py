"""Images on the real kernel: busybox bootstrap, overlay roots, a container on one, import, remove.

Every test that mounts registers its target with ``mounts``, which detaches
whatever is still mounted at the end, whatever happened.
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from protocols.runtime_spec import default_spec_document
from runtime.errors import MountError
from runtime.images import BUSYBOX, Image, ImageError, ImageNotFound, ImageStore
from runtime.layers import UnsafeLayerEntry, unpack_layer
from runtime.overlay import is_mounted, mount_container_root, unmount

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "data")


@pytest.fixture
def busybox(store: ImageStore) -> Image:
    if not BUSYBOX.exists():
        pytest.skip("busybox-static is not installed (Debian package busybox-static; make setup installs it)")
    return store.bootstrap_busybox()


@pytest.fixture
def mounts():
    targets: list[Path] = []
    yield targets
    for target in reversed(targets):
        if is_mounted(target):
            unmount(target, detach=True)
    assert not any(is_mounted(t) for t in targets)


def container_dirs(base: Path) -> tuple[Path, Path, Path]:
    """upper, work, rootfs of one container, as containers/<id>/ will hold them."""
    dirs = tuple(base / name for name in ("upper", "work", "rootfs"))
    for d in dirs:
        d.mkdir(parents=True)
    return dirs


def mount_image(image: Image, base: Path, mounts: list[Path], *extra_top: Path) -> tuple[Path, Path]:
    upper, work, rootfs = container_dirs(base)
    mounts.append(rootfs)
    lowers = [*extra_top, *reversed(image.rootfs_layers())]   # overlayfs: top first
    mount_container_root(lowers, upper, work, rootfs)
    return upper, rootfs


def is_whiteout(path: Path) -> bool:
    st = path.lstat()
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def test_bootstrap_busybox_is_listed(store: ImageStore, busybox: Image) -> None:
    assert [(i.id, i.repo_tags) for i in store.list()] == [(busybox.id, ("busybox:latest",))]
    assert store.get("busybox").id == store.get("busybox:latest").id == busybox.id
    assert store.get(busybox.short_id).id == store.get(busybox.id).id == busybox.id
    assert busybox.config.cmd == ("sh",)
    assert busybox.size > BUSYBOX.stat().st_size - 1
    (layer,) = busybox.rootfs_layers()
    assert layer.parent == store.snapshots and (layer / "bin/busybox").is_file()
    assert os.readlink(layer / "bin/sh") == "busybox"
    with pytest.raises(ImageNotFound, match="no such image: alpine"):
        store.get("alpine")


def test_overlay_root_writes_land_in_upper_and_whiteouts_hide(tmp_path: Path, busybox: Image, mounts) -> None:
    # A layer whose whiteout hides /bin/ls of the busybox layer under it.
    hiding = tmp_path / "hiding"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("bin/.wh.ls"))
    unpack_layer(io.BytesIO(buf.getvalue()), hiding)
    assert is_whiteout(hiding / "bin/ls")

    upper, rootfs = mount_image(busybox, tmp_path / "c1", mounts, hiding)
    (lower,) = busybox.rootfs_layers()
    assert is_mounted(rootfs)
    assert (rootfs / "bin/busybox").is_file()
    assert not os.path.lexists(rootfs / "bin/ls") and os.path.lexists(lower / "bin/ls")

    (rootfs / "tmp/new").write_text("written in the container root")
    assert (upper / "tmp/new").read_text() == "written in the container root"
    assert not (lower / "tmp/new").exists()

    (rootfs / "bin/cat").unlink()                       # deleting a lower file makes a whiteout in upper
    assert is_whiteout(upper / "bin/cat") and os.path.lexists(lower / "bin/cat")

    unmount(rootfs)
    assert not is_mounted(rootfs)


def test_a_container_runs_on_the_overlay_root(tmp_path: Path, busybox: Image, mounts) -> None:
    upper, rootfs = mount_image(busybox, tmp_path / "c1", mounts)
    doc = default_spec_document(args=("sh", "-c", "echo hello from $(hostname) > /greeting; cat /greeting"),
                                terminal=False)
    doc["root"] = {"path": str(rootfs), "readonly": False}
    # spawn_init clones; only a single-threaded process may call it (spawn.py),
    # and pytest is not one (faulthandler's watchdog), so a fresh interpreter does.
    script = textwrap.dedent("""
        import json, sys
        from protocols.runtime_spec import parse_spec
        from runtime.spawn import spawn_init
        child = spawn_init(parse_spec(json.loads(sys.argv[1])), bundle=sys.argv[2])
        child.wait_exec()
        status = child.wait()
        child.close()
        sys.exit(status.exit_code)
    """)
    done = subprocess.run([sys.executable, "-c", script, json.dumps(doc), str(tmp_path / "c1")],
                          capture_output=True, text=True, timeout=60, cwd=REPO, stdin=subprocess.DEVNULL, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, "hello from runc\n", "")
    assert (upper / "greeting").read_text() == "hello from runc\n"
    unmount(rootfs)


def test_many_layers_overflow_the_page_and_still_mount(tmp_path: Path, mounts) -> None:
    # 60 lower dirs of ~110-byte paths: ~6.6 KiB of options, past mount(2)'s page.
    deep = tmp_path / ("long-directory-name-" * 4)
    lowers = []
    for i in range(60):
        d = deep / f"layer-{i:03d}"
        d.mkdir(parents=True)
        (d / f"file-{i}").write_text(str(i))
        lowers.append(d)
    (lowers[0] / "shadowed").write_text("top")
    (lowers[-1] / "shadowed").write_text("bottom")
    upper, work, rootfs = container_dirs(tmp_path / "c")
    mounts.append(rootfs)
    mount_container_root(lowers, upper, work, rootfs)
    assert len(os.listdir(rootfs)) == 61
    assert (rootfs / "shadowed").read_text() == "top"
    unmount(rootfs)


def test_mount_failures_are_mount_errors(tmp_path: Path, mounts) -> None:
    upper, work, rootfs = container_dirs(tmp_path / "c")
    mounts.append(rootfs)
    with pytest.raises(MountError, match="at least one lower dir"):
        mount_container_root([], upper, work, rootfs)
    with pytest.raises(MountError, match="failed to mount overlay on .*lowerdir="):
        mount_container_root([tmp_path / "missing"], upper, work, rootfs)
    with pytest.raises(MountError, match="failed to unmount"):
        unmount(rootfs)


@pytest.mark.parametrize("flags", ["-czf", "-cf"], ids=["gzip", "plain"])
def test_import_of_a_tar_made_by_tar(tmp_path: Path, store: ImageStore, flags: str) -> None:
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc/motd").write_text("imported\n")
    os.symlink("etc/motd", src / "motd")
    os.chown(src / "etc/motd", 1000, 1000)
    layer = tmp_path / "layer.tar"
    subprocess.run(["tar", "-C", str(src), flags, str(layer), "."], check=True)

    image = store.import_tar(layer, "imported:v1")
    assert store.get("imported:v1").id == image.id
    assert image.repo_tags == ("imported:v1",)
    assert image.config.cmd is None and image.config.env == ()   # docker import: empty config
    (snapshot,) = image.rootfs_layers()
    assert (snapshot / "etc/motd").read_text() == "imported\n"
    assert (snapshot / "etc/motd").stat().st_uid == 1000
    assert os.readlink(snapshot / "motd") == "etc/motd"
    manifest = json.loads(store.content.read_blob(image.manifest_digest))
    (layer_desc,) = manifest["layers"]
    assert layer_desc["mediaType"].endswith("tar+gzip" if flags == "-czf" else "tar")
    assert (layer_desc["digest"] == image.diff_ids[0]) == (flags == "-cf")


def test_remove_keeps_shared_snapshots(tmp_path: Path, store: ImageStore) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "data").write_text("shared")
    first = store.import_directory(src, "one")
    second = store.import_directory(src, "two")
    assert first.id != second.id                      # created differs
    assert first.chain_ids == second.chain_ids        # same layer, one snapshot
    (snapshot,) = first.rootfs_layers()

    assert store.remove("one") == [("Untagged", "one:latest"), ("Deleted", first.id)]
    assert snapshot.is_dir() and (snapshot / "data").read_text() == "shared"
    assert store.content.has(second.manifest_digest) and not store.content.has(first.manifest_digest)
    assert [i.id for i in store.list()] == [second.id]

    store.tag("two", "also-two")
    with pytest.raises(ImageError, match="must be forced"):
        store.remove(second.short_id)
    assert store.remove("two") == [("Untagged", "two:latest")]
    assert store.remove(second.short_id) == [("Untagged", "also-two:latest"), ("Deleted", second.id)]
    assert not snapshot.exists()
    assert list(store.content.digests()) == []
    assert sorted(os.listdir(store.snapshots)) == []


def test_tags_move_and_leave_dangling_images(tmp_path: Path, store: ImageStore) -> None:
    src = tmp_path / "src"
    src.mkdir()
    old = store.import_directory(src, "app")
    new = store.import_directory(src, "app")
    assert store.get("app").id == new.id
    assert store.get(old.id).repo_tags == ()           # dangling, as in Docker
    assert {i.id for i in store.list()} == {old.id, new.id}


def test_interrupted_unpack_leaves_no_snapshot(tmp_path: Path, store: ImageStore) -> None:
    bad = tmp_path / "bad.tar"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("../escape"))
    bad.write_bytes(buf.getvalue())
    with pytest.raises(UnsafeLayerEntry, match="contains '..'"):
        store.import_tar(bad, "bad")
    assert store.list() == []
    assert list(store.content.digests()) == []
    assert [p for p in store.snapshots.iterdir()] == []
    assert not (tmp_path / "escape").exists()
