"""Volumes and binds through `corral` on the real kernel: named, implicit and anonymous
volumes shared between containers, refused removal while in use, read-only binds.

Each test runs its own daemon (``tests/integration/_daemon.py``); volumes live in
its data root under ``tmp_path``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ._daemon import Daemon, daemon_fixture  # noqa: F401 - the `daemon` fixture

pytestmark = pytest.mark.root


def test_volume_create_ls_inspect(daemon: Daemon) -> None:
    assert daemon.ok("volume", "create", "data") == "data\n"
    random_name = daemon.ok("volume", "create").strip()
    assert re.fullmatch(r"[0-9a-f]{64}", random_name)
    assert daemon.ok("volume", "create", "data") == "data\n"             # exists: answered, not refused
    daemon.ok("volume", "create", "--label", "team=db", "labelled")
    assert daemon.ok("volume", "ls", "-q").split() == sorted([random_name, "data", "labelled"])
    table = daemon.ok("volume", "ls").splitlines()
    assert table[0] == "DRIVER    VOLUME NAME" and "local     data" in table
    assert [v["Name"] for v in daemon.json_lines("volume", "ls", "--filter", "label=team=db")] == ["labelled"]
    assert daemon.ok("volume", "ls", "-q", "--filter", "name=^dat").split() == ["data"]

    (info,) = json.loads(daemon.ok("volume", "inspect", "data"))
    mountpoint = daemon.data_root / "volumes" / "data" / "_data"
    assert info["Name"] == "data" and info["Driver"] == "local" and info["Scope"] == "local"
    assert info["Mountpoint"] == str(mountpoint) and mountpoint.is_dir()
    assert info["Labels"] == {} and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", info["CreatedAt"])

    out = daemon.cli("volume", "create", "bad$name")
    assert out.returncode == 125 and "includes invalid characters for a local volume name" in out.stderr
    out = daemon.cli("volume", "inspect", "nosuch")
    assert out.returncode == 1 and "no such volume" in out.stderr
    out = daemon.cli("volume", "create", "-d", "nfs", "x1")
    assert out.returncode == 125 and "not supported" in out.stderr


def test_a_volume_written_by_one_container_is_read_by_another(daemon: Daemon) -> None:
    daemon.ok("volume", "create", "shared")
    daemon.ok("run", "--rm", "-v", "shared:/data", "busybox", "sh", "-c", "echo from-writer > /data/note")
    assert daemon.ok("run", "--rm", "-v", "shared:/in:ro", "busybox", "cat", "/in/note") == "from-writer\n"
    mountpoint = Path(json.loads(daemon.ok("volume", "inspect", "shared"))[0]["Mountpoint"])
    assert (mountpoint / "note").read_text() == "from-writer\n"
    # Mounted read-only, the volume refuses writes.
    out = daemon.cli("run", "--rm", "-v", "shared:/in:ro", "busybox", "sh", "-c", "echo x > /in/other")
    assert out.returncode != 0 and "Read-only file system" in out.stderr + out.stdout
    assert not (mountpoint / "other").exists()
    # A volume named in -v that does not exist yet is created, as Docker does.
    daemon.ok("run", "--rm", "-v", "implicit:/x", "busybox", "sh", "-c", "echo 1 > /x/y")
    assert "implicit" in daemon.ok("volume", "ls", "-q").split()
    assert (daemon.data_root / "volumes" / "implicit" / "_data" / "y").read_text() == "1\n"
    # Inspect shows the mount as Docker does; HostConfig.Binds keeps the volume's name.
    daemon.ok("create", "--name", "mnt", "-v", "shared:/data:ro", "busybox", "true")
    info = daemon.inspect("mnt")
    assert info["HostConfig"]["Binds"] == ["shared:/data:ro"]
    assert info["Mounts"] == [{"Type": "volume", "Name": "shared", "Source": str(mountpoint), "Destination": "/data",
                               "Driver": "local", "Mode": "ro", "RW": False, "Propagation": ""}]
    assert [r["Names"] for r in daemon.json_lines("ps", "-a", "--filter", "volume=shared")] == [["/mnt"]]
    assert [r["Names"] for r in daemon.json_lines("ps", "-a", "--filter", "volume=/data")] == [["/mnt"]]


def test_volume_rm_is_refused_while_a_container_uses_it(daemon: Daemon) -> None:
    daemon.ok("volume", "create", "busy")
    cid = daemon.ok("create", "--name", "user", "-v", "busy:/b", "busybox", "true").strip()
    out = daemon.cli("volume", "rm", "busy")
    assert out.returncode == 1 and f"remove busy: volume is in use - [{cid}]" in out.stderr
    out = daemon.cli("volume", "rm", "-f", "busy")                       # force does not override use
    assert out.returncode == 1 and "volume is in use" in out.stderr
    assert daemon.ok("volume", "ls", "-q", "--filter", "dangling=false").split() == ["busy"]
    daemon.ok("rm", "user")
    assert daemon.ok("volume", "ls", "-q", "--filter", "dangling=true").split() == ["busy"]
    assert daemon.ok("volume", "rm", "busy") == "busy\n"
    assert not (daemon.data_root / "volumes" / "busy").exists()
    out = daemon.cli("volume", "rm", "busy")
    assert out.returncode == 1 and "no such volume" in out.stderr
    daemon.ok("volume", "rm", "-f", "busy")                             # -f: a missing one is fine
    events = [(e["action"], e["id"]) for e in daemon.events("--filter", "type=volume")]
    assert events == [("create", "busy"), ("destroy", "busy")]


def test_mount_events_and_anonymous_volumes(daemon: Daemon) -> None:
    daemon.ok("run", "--name", "ev", "-v", "evvol:/v", "busybox", "true")
    events = [(e["action"], e["id"], e["attributes"].get("destination"))
              for e in daemon.events("--filter", "type=volume")]
    assert events == [("create", "evvol", None), ("mount", "evvol", "/v"), ("unmount", "evvol", "/v")]
    # "-v /path" alone: an anonymous volume, which rm -v takes away (named ones stay).
    daemon.ok("create", "--name", "anon", "-v", "/scratch", "-v", "evvol:/named", "busybox", "true")
    (anon,) = [m for m in daemon.inspect("anon")["Mounts"] if m["Destination"] == "/scratch"]
    assert anon["Type"] == "volume" and re.fullmatch(r"[0-9a-f]{64}", anon["Name"])
    (info,) = json.loads(daemon.ok("volume", "inspect", anon["Name"]))
    assert info["Labels"] == {"com.docker.volume.anonymous": ""}
    daemon.ok("rm", "-v", "anon")
    assert daemon.ok("volume", "ls", "-q").split() == ["evvol"]
    # run --rm removes the anonymous volumes of the container it removes.
    daemon.ok("run", "--rm", "-v", "/tmpdata", "busybox", "sh", "-c", "echo x > /tmpdata/x")
    assert daemon.ok("volume", "ls", "-q").split() == ["evvol"]
    # Plain rm (no -v) leaves them, as Docker does.
    daemon.ok("create", "--name", "keepanon", "-v", "/keep", "busybox", "true")
    name = daemon.inspect("keepanon")["Mounts"][0]["Name"]
    daemon.ok("rm", "keepanon")
    assert sorted(daemon.ok("volume", "ls", "-q").split()) == sorted(["evvol", name])


def test_bind_mounts_read_only_and_read_write(daemon: Daemon, tmp_path: Path) -> None:
    hostdir = tmp_path / "hostdir"
    hostdir.mkdir()
    (hostdir / "f").write_text("from the host\n")
    out = daemon.cli("run", "--rm", "-v", f"{hostdir}:/x:ro", "busybox", "sh", "-c", "cat /x/f; echo no > /x/g")
    # (run in the foreground prints the container's stdout on our stdout, its stderr on our stderr.)
    assert out.returncode != 0 and out.stdout.startswith("from the host\n")
    assert "Read-only file system" in out.stdout + out.stderr
    assert not (hostdir / "g").exists()
    daemon.ok("run", "--rm", "-v", f"{hostdir}:/x", "busybox", "sh", "-c", "echo yes > /x/g")
    assert (hostdir / "g").read_text() == "yes\n"
    daemon.ok("create", "--name", "bound", "-v", f"{hostdir}:/x:ro", "busybox", "true")
    assert daemon.inspect("bound")["Mounts"] == [{"Type": "bind", "Source": str(hostdir), "Destination": "/x",
                                              "Mode": "ro", "RW": False, "Propagation": "rprivate"}]
    out = daemon.cli("create", "-v", "relative/path:/x", "busybox", "true")
    assert out.returncode == 125 and "invalid characters for a local volume name" in out.stderr


def test_inspect_finds_a_container_an_image_or_a_volume(daemon: Daemon) -> None:
    # docker inspect NAME: a container, else an image, else a volume; --type narrows it.
    daemon.ok("volume", "create", "data")
    daemon.ok("create", "--name", "box", "busybox", "true")
    box, image, volume = json.loads(daemon.ok("inspect", "box", "busybox", "data"))
    assert box["Name"] == "/box" and box["State"]["Status"] == "created"
    assert image["Id"].startswith("sha256:") and "busybox:latest" in image["RepoTags"]
    assert volume["Name"] == "data" and volume["Driver"] == "local"
    assert json.loads(daemon.ok("inspect", "--type", "image", "busybox"))[0]["Id"] == image["Id"]

    out = daemon.cli("inspect", "box", "nothing-here")
    assert out.returncode == 1 and out.stderr == "corral: no such object: nothing-here\n"
    assert [c["Name"] for c in json.loads(out.stdout)] == ["/box"]
    out = daemon.cli("inspect", "--type", "container", "busybox")
    assert out.returncode == 1 and "no such container: busybox" in out.stderr and json.loads(out.stdout) == []
