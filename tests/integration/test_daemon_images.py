"""The image verbs through `corral` on the real kernel: import (dir, tar, stdin), tag,
rmi (and its conflicts with containers), image inspect, images, and their events.

Each test runs its own daemon (``tests/integration/_daemon.py``) with busybox:latest
bootstrapped; the fixture force-removes every container and stops the daemon.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from runtime.images import make_busybox_rootfs

from ._daemon import TIMEOUT, Daemon, daemon_fixture  # noqa: F401 - the `daemon` fixture
from .conftest import corral_command

pytestmark = pytest.mark.root

MARKER = "made by test_daemon_images\n"


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    """A busybox root filesystem with /marker in it."""
    root = make_busybox_rootfs(tmp_path / "rootfs")
    (root / "marker").write_text(MARKER)
    return root


def _cli_with_stdin(daemon: Daemon, data: bytes, *args: str) -> subprocess.CompletedProcess:
    """`corral ARGS` with ``data`` on its stdin (Daemon.cli gives /dev/null)."""
    return subprocess.run([*corral_command(), "-H", f"unix://{daemon.socket}", *args], input=data,
                          capture_output=True, timeout=TIMEOUT, check=False)


def _image_id(out: str) -> str:
    image_id = out.strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71, out
    return image_id


def _image_inspect(daemon: Daemon, ref: str) -> dict:
    return json.loads(daemon.ok("image", "inspect", ref))[0]


def _tags(daemon: Daemon) -> dict[str, list[str]]:
    """Image id -> its tags, from `images --format json`."""
    return {r["Id"]: r["RepoTags"] for r in daemon.json_lines("images")}


def test_import_directory_with_change_runs_its_cmd(daemon: Daemon, rootfs: Path) -> None:
    image_id = _image_id(daemon.ok("import", "--change", 'CMD ["cat","/marker"]', "-m", "from a dir",
                                   str(rootfs), "mine:1"))
    assert daemon.ok("run", "--rm", "mine:1") == MARKER
    info = _image_inspect(daemon, "mine:1")
    assert info["Id"] == image_id and info["Config"]["Cmd"] == ["cat", "/marker"]
    assert info["Comment"] == "from a dir"
    # images: the table, -q, --no-trunc
    table = daemon.ok("images")
    assert any(line.split()[:3] == ["mine", "1", image_id[7:19]] for line in table.splitlines()), table
    assert image_id[7:19] in daemon.ok("images", "-q").split()
    assert image_id in daemon.ok("images", "-q", "--no-trunc").split()
    assert image_id in daemon.ok("images", "--no-trunc")
    assert daemon.ok("image", "ls", "-q") == daemon.ok("images", "-q")


def test_import_tar_plain_gzip_and_stdin(daemon: Daemon, rootfs: Path, tmp_path: Path) -> None:
    plain, gz = tmp_path / "root.tar", tmp_path / "root.tar.gz"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(plain), "."], check=True)
    subprocess.run(["tar", "-C", str(rootfs), "-czf", str(gz), "."], check=True)

    from_file = _image_id(daemon.ok("import", str(plain), "fromtar"))
    # No --change: the image has no Cmd (docker import), so the command is given.
    assert daemon.ok("run", "--rm", "fromtar", "cat", "/marker") == MARKER
    assert _image_inspect(daemon, "fromtar")["Config"]["Cmd"] is None
    from_gz = _image_id(daemon.ok("import", "-c", "CMD cat /marker", str(gz), "fromgz"))
    assert daemon.ok("run", "--rm", "fromgz") == MARKER                   # shell form: /bin/sh -c

    spooled_before = set(glob.glob(f"{tempfile.gettempdir()}/corral-import-*"))
    out = _cli_with_stdin(daemon, plain.read_bytes(), "import", "-c", 'CMD ["cat","/marker"]', "-", "fromstdin")
    assert out.returncode == 0, out.stderr
    from_stdin = _image_id(out.stdout.decode())
    assert set(glob.glob(f"{tempfile.gettempdir()}/corral-import-*")) <= spooled_before   # spool removed
    assert daemon.ok("run", "--rm", "fromstdin") == MARKER
    assert _image_inspect(daemon, "fromstdin")["Comment"] == "Imported from -"
    # Same layer, different configs: three images on one shared snapshot.
    assert len({from_file, from_gz, from_stdin}) == 3
    layers = {tuple(_image_inspect(daemon, ref)["RootFS"]["Layers"]) for ref in ("fromtar", "fromstdin")}
    assert len(layers) == 1

    # Without a name: a dangling image, listed as <none>.
    out = _cli_with_stdin(daemon, gzip.compress(plain.read_bytes()), "import", "-")
    assert out.returncode == 0, out.stderr
    assert _tags(daemon)[_image_id(out.stdout.decode())] == []
    assert "<none>" in daemon.ok("images")


def test_tag_then_run_by_the_new_tag(daemon: Daemon) -> None:
    busybox = _image_inspect(daemon, "busybox")["Id"]
    daemon.ok("tag", "busybox", "me/box:v2")
    daemon.ok("image", "tag", busybox[7:19], "other")                   # by id prefix, the docker image form
    assert sorted(_tags(daemon)[busybox]) == ["busybox:latest", "me/box:v2", "other:latest"]
    assert daemon.ok("run", "--rm", "me/box:v2", "echo", "tagged") == "tagged\n"
    assert daemon.inspect(daemon.ok("create", "other", "true").strip())["Image"] == busybox
    out = daemon.cli("tag", "busybox", "Bad:Ref!")
    assert out.returncode == 125 and "invalid reference" in out.stderr


def test_rmi_refused_while_a_container_uses_it_allowed_after_rm(daemon: Daemon) -> None:
    busybox = _image_inspect(daemon, "busybox")["Id"]
    cid = daemon.ok("create", "busybox", "true").strip()                 # "created" counts: any state
    out = daemon.cli("rmi", "busybox:latest")
    assert out.returncode == 1
    assert out.stderr.strip() == (f'corral: conflict: unable to remove repository reference "busybox:latest" '
                                  f"(must force) - container {cid[:12]} is using its referenced image "
                                  f"{busybox[7:19]}")
    out = daemon.cli("rmi", busybox)
    assert out.returncode == 1 and f"(must be forced) - image is being used by stopped container {cid[:12]}" \
        in out.stderr
    daemon.ok("start", cid)
    daemon.ok("wait", cid)
    daemon.ok("rm", cid)
    assert daemon.ok("rmi", "busybox").splitlines() == ["Untagged: busybox:latest", f"Deleted: {busybox}"]
    assert daemon.json_lines("images") == []
    assert list((daemon.data_root / "snapshots").iterdir()) == []        # its layer went too
    out = daemon.cli("run", "--rm", "busybox", "true")
    assert out.returncode == 125 and "no such image" in out.stderr


def test_rmi_force_untags_but_keeps_what_containers_use(daemon: Daemon) -> None:
    busybox = _image_inspect(daemon, "busybox")["Id"]
    daemon.ok("tag", "busybox", "second")
    running = daemon.ok("run", "-d", "busybox", "sleep", "1000").strip()
    # Two tags: removing one is only an untag, container or not.
    assert daemon.ok("rmi", "second") == "Untagged: second:latest\n"
    # By id, a running container blocks it even with -f (moby's "cannot be forced").
    out = daemon.cli("rmi", "-f", busybox)
    assert out.returncode == 1 and "(cannot be forced) - image is being used by running container " \
        f"{running[:12]}" in out.stderr
    # -f by tag: the tag goes, the image stays (dangling) for the container.
    assert daemon.ok("rmi", "-f", "busybox") == "Untagged: busybox:latest\n"
    assert _tags(daemon) == {busybox: []}
    daemon.ok("rm", "-f", running)
    stopped = daemon.ok("create", busybox, "echo", "still runs").strip()
    # By id with -f and a stopped container: nothing left to untag, nothing deleted.
    assert daemon.ok("rmi", "-f", busybox) == ""
    daemon.ok("start", stopped)
    daemon.ok("wait", stopped)
    assert daemon.ok("logs", stopped) == "still runs\n"
    daemon.ok("rm", stopped)
    assert daemon.ok("rmi", busybox) == f"Deleted: {busybox}\n"
    assert _tags(daemon) == {}


def test_rmi_by_id_with_several_tags_needs_force(daemon: Daemon) -> None:
    busybox = _image_inspect(daemon, "busybox")["Id"]
    daemon.ok("tag", "busybox", "twin")
    out = daemon.cli("rmi", busybox[7:19])
    assert out.returncode == 1 and "image is referenced in multiple repositories" in out.stderr
    lines = daemon.ok("image", "rm", "-f", busybox[7:19]).splitlines()
    assert sorted(lines) == sorted(["Untagged: busybox:latest", "Untagged: twin:latest", f"Deleted: {busybox}"])


def test_image_inspect_fields(daemon: Daemon, rootfs: Path) -> None:
    daemon.ok("import", "-c", 'ENV GREETING="hi there"', "-c", "ENV A=1", "-c", "WORKDIR /srv",
              "-c", 'ENTRYPOINT ["/bin/sh","-c"]', "-c", "USER nobody", "-c", "LABEL tier=web",
              "-c", 'CMD ["echo $GREETING"]', str(rootfs), "full:v1")
    info = _image_inspect(daemon, "full:v1")
    assert info["RepoTags"] == ["full:v1"] and info["Id"].startswith("sha256:")
    assert info["Created"].endswith("Z") and info["Size"] > 100_000           # busybox is ~1 MB
    assert (info["Architecture"], info["Os"]) in {("amd64", "linux"), ("arm64", "linux")}
    assert info["RootFS"]["Type"] == "layers" and len(info["RootFS"]["Layers"]) == 1
    assert info["RootFS"]["Layers"][0].startswith("sha256:")
    config = info["Config"]
    assert config["Env"] == ["GREETING=hi there", "A=1"]
    assert (config["Cmd"], config["Entrypoint"]) == (["echo $GREETING"], ["/bin/sh", "-c"])
    assert (config["WorkingDir"], config["User"], config["Labels"]) == ("/srv", "nobody", {"tier": "web"})
    # The config is what containers get: env, workdir, entrypoint + cmd.
    assert daemon.ok("run", "--rm", "-u", "0", "full:v1") == "hi there\n"
    assert daemon.ok("run", "--rm", "-u", "0", "full:v1", "pwd") == "/srv\n"
    # Several at once; a missing one fails the command but the others print.
    out = daemon.cli("image", "inspect", "full:v1", "nosuch")
    assert out.returncode == 1 and "no such image: nosuch" in out.stderr
    assert [i["RepoTags"] for i in json.loads(out.stdout)] == [["full:v1"]]


def test_image_events(daemon: Daemon, rootfs: Path) -> None:
    image_id = _image_id(daemon.ok("import", str(rootfs), "ev:1"))
    daemon.ok("tag", "ev:1", "ev:2")
    daemon.ok("rmi", "ev:2")
    daemon.ok("rmi", "ev:1")
    events = [(e["action"], e["id"], e["attributes"].get("name"))
              for e in daemon.events("--filter", "type=image") if e["id"] == image_id]
    assert events == [("tag", image_id, "ev:1"), ("import", image_id, "ev:1"), ("tag", image_id, "ev:2"),
                      ("untag", image_id, "ev:2"), ("untag", image_id, "ev:1"), ("delete", image_id, image_id)]


def test_bad_input(daemon: Daemon, tmp_path: Path) -> None:
    images_before = _tags(daemon)
    blobs = daemon.data_root / "content" / "blobs" / "sha256"
    blobs_before = set(blobs.iterdir())

    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar archive\n" * 40)
    out = daemon.cli("import", str(junk), "junk")
    assert out.returncode == 125 and "not a valid root filesystem tar" in out.stderr, out.stderr

    # An entry climbing out of the snapshot: far enough to reach the sentinel from any depth.
    sentinel = tmp_path / "sentinel"
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        for name in ("../escape", "../" * 40 + str(sentinel).lstrip("/")):
            info = tarfile.TarInfo(name)
            info.size = 6
            tar.addfile(info, io.BytesIO(b"owned\n"))
    out = daemon.cli("import", str(evil), "evil")
    assert out.returncode == 125 and "contains '..'" in out.stderr, out.stderr
    assert not sentinel.exists()
    assert not (daemon.data_root / "escape").exists() and not (daemon.data_root / "snapshots" / "escape").exists()

    out = daemon.cli("import", str(tmp_path / "missing.tar"), "x")
    assert out.returncode == 125 and "no such file or directory" in out.stderr
    out = daemon.cli("import", "/dev/null", "x")
    assert out.returncode == 125 and "neither a tar file nor a directory" in out.stderr
    out = daemon.cli("import", "-c", "RUN make", str(junk), "x")
    assert out.returncode == 125 and "'RUN' is not a valid change command" in out.stderr
    # Nothing of the failed imports stayed: no image, no blob, no snapshot.
    assert _tags(daemon) == images_before
    assert set(blobs.iterdir()) == blobs_before
    assert len(list((daemon.data_root / "snapshots").iterdir())) == 1      # busybox's

    for args in (("rmi", "nosuch"), ("image", "inspect", "nosuch:1"), ("tag", "nosuch", "x")):
        out = daemon.cli(*args)
        assert out.returncode != 0 and "no such image: nosuch" in out.stderr, (args, out.stderr)
