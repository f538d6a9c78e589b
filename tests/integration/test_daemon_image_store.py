"""The image store's upkeep on a real daemon: images filters, history, image prune (and the
garbage collection of blobs and snapshots it ends with), system df."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ._daemon import Daemon, daemon_fixture  # noqa: F401 - the `daemon` fixture

pytestmark = pytest.mark.root


def make_tree(path: Path, marker: str) -> Path:
    (path / "bin").mkdir(parents=True)
    (path / "marker").write_text(marker)
    return path


def ids(d: Daemon, *args: str) -> set[str]:
    return {i["Id"] for i in d.json_lines("images", *args)}


def store_files(d: Daemon) -> tuple[set[str], set[str]]:
    blobs = {p.name for p in (d.data_root / "content" / "blobs" / "sha256").iterdir()}
    snapshots = {p.name for p in (d.data_root / "snapshots").iterdir()}
    return blobs, snapshots


def test_images_filters(daemon: Daemon, tmp_path: Path) -> None:
    d = daemon
    busybox = json.loads(d.ok("image", "inspect", "busybox"))[0]["Id"]
    web = d.ok("import", "-c", "LABEL tier=web", str(make_tree(tmp_path / "a", "a")), "shop/web:1").strip()
    d.ok("import", "-c", "LABEL tier=db", str(make_tree(tmp_path / "b", "b")), "shop/db:1")
    old = d.ok("import", str(make_tree(tmp_path / "c", "c")), "shop/db:1").strip()  # moves the tag off db's first
    assert old not in ids(d, "--filter", "dangling=true") and len(ids(d, "--filter", "dangling=true")) == 1
    assert busybox in ids(d, "--filter", "dangling=false")
    assert ids(d, "--filter", "label=tier=web") == {web}
    assert len(ids(d, "--filter", "label=tier")) == 2
    assert ids(d, "--filter", "reference=shop/web") == {web}
    assert ids(d, "--filter", "reference=shop/*:1") == {web, old}
    assert ids(d, "--filter", "reference=busy*") == {busybox}
    out = d.cli("images", "--filter", "colour=red")
    assert out.returncode != 0 and "colour" in out.stderr
    out = d.cli("images", "--filter", "dangling=maybe")
    assert out.returncode != 0 and "dangling=maybe" in out.stderr


def test_history(daemon: Daemon, tmp_path: Path) -> None:
    d = daemon
    rows = d.json_lines("history", "busybox")
    assert len(rows) == 1 and rows[0]["Id"] == json.loads(d.ok("image", "inspect", "busybox"))[0]["Id"]
    assert rows[0]["Comment"].startswith("corral bootstrap from") and rows[0]["Size"] > 1_000_000
    table = d.ok("history", "busybox").splitlines()
    assert table[0].split() == ["IMAGE", "CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
    assert d.ok("image", "history", "-q", "busybox").strip() == rows[0]["Id"].removeprefix("sha256:")[:12]
    out = d.cli("history", "nosuch")
    assert out.returncode != 0 and "no such image" in out.stderr.lower()


def test_image_prune_and_garbage_collection(daemon: Daemon, tmp_path: Path) -> None:
    d = daemon
    busybox = json.loads(d.ok("image", "inspect", "busybox"))[0]["Id"]
    baseline = store_files(d)
    first = d.ok("import", str(make_tree(tmp_path / "a", "first")), "app:1").strip()
    second = d.ok("import", str(make_tree(tmp_path / "b", "second")), "app:1").strip()   # first is dangling now
    used = d.ok("import", str(make_tree(tmp_path / "c", "used")), "app:used").strip()
    d.ok("create", "--name", "holder", "app:used", "true")                 # a container uses it
    out = d.ok("image", "prune", "-f")
    assert f"deleted: {first}" in out and "Total reclaimed space:" in out
    assert ids(d) == {busybox, second, used}
    out = d.ok("image", "prune", "-a", "-f")
    assert "untagged: app:1" in out and f"deleted: {second}" in out and f"deleted: {busybox}" in out
    assert ids(d) == {used}                                                # only the one a container uses
    d.ok("rm", "holder")
    d.ok("image", "prune", "-a", "-f")
    # Nothing is in use any more: every image went, and with them every blob and snapshot.
    assert ids(d) == set()
    blobs, snapshots = store_files(d)
    assert blobs == set() and snapshots == set()
    assert baseline[0] and baseline[1]
    d.ok("image", "bootstrap", "busybox")
    assert d.ok("run", "--rm", "busybox", "echo", "back").strip() == "back"


def test_system_df(daemon: Daemon) -> None:
    d = daemon
    d.ok("run", "-d", "--name", "writer", "-v", "data:/data", "busybox", "sh", "-c",
         "head -c 300000 /dev/zero > /big; head -c 200000 /dev/zero > /data/v; sleep 300")
    from .conftest import wait_for
    wait_for(lambda: json.loads(d.ok("system", "df", "--format", "json"))["Volumes"][0]["UsageData"]["Size"] >= 200000,
             timeout=30, what="the container's writes")
    df = json.loads(d.ok("system", "df", "--format", "json"))
    (image,) = df["Images"]
    assert image["Containers"] == 1 and image["Size"] > 1_000_000
    (container,) = df["Containers"]
    assert container["SizeRw"] >= 300000 and container["State"] == "running"
    (volume,) = df["Volumes"]
    assert volume["Name"] == "data" and volume["UsageData"]["RefCount"] == 1
    table = d.ok("system", "df").splitlines()
    assert table[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert table[1].split()[:3] == ["Images", "1", "1"] and table[2].split()[:3] == ["Containers", "1", "1"]


def test_daemon_start_collects_what_nothing_references(daemon: Daemon) -> None:
    d = daemon
    before = store_files(d)
    blobs = d.data_root / "content" / "blobs" / "sha256"
    import hashlib
    stray = b"written by a pull that never finished"
    (blobs / hashlib.sha256(stray).hexdigest()).write_bytes(stray)
    (blobs / ".tmp-interrupted").write_bytes(b"half a blob")
    (d.data_root / "snapshots" / ("0" * 64)).mkdir()
    assert d.stop() == 0
    d.start()
    assert store_files(d) == before
    assert not (blobs / ".tmp-interrupted").exists()
    assert d.ok("run", "--rm", "busybox", "echo", "intact").strip() == "intact"
