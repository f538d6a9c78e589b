"""corral save / load on a real daemon, and both directions through skopeo (Debian's),
the reference reader and writer of docker-archive and OCI layout archives.

Each test has its own daemon (tests/integration/_daemon.py). Bad archives must
get a clear error and leave the store as it was: same images, same blobs.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from ._daemon import Daemon, daemon_fixture  # noqa: F401 - the `daemon` fixture

pytestmark = pytest.mark.root
SKOPEO_TIMEOUT = 120


def skopeo(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("skopeo")
    if exe is None:
        pytest.skip("needs skopeo (Debian package skopeo; make setup installs it)")
    done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=SKOPEO_TIMEOUT, check=False)
    assert done.returncode == 0, (args, done.stderr)
    return done


def blobs(d: Daemon) -> set[str]:
    return {p.name for p in (d.data_root / "content" / "blobs" / "sha256").iterdir()}


def image_ids(d: Daemon) -> dict[str, str]:
    """Tag -> image id, from ``images --format json`` (Docker's image summaries)."""
    return {tag: i["Id"] for i in d.json_lines("images") for tag in i["RepoTags"] or ["<none>:<none>"]}


def test_save_load_round_trip_keeps_ids_and_tags(daemon: Daemon, tmp_path: Path) -> None:
    d = daemon
    d.ok("tag", "busybox", "example.com/team/tools:1.0")
    before = image_ids(d)
    for fmt in ("docker", "oci"):
        archive = tmp_path / f"images-{fmt}.tar"
        d.ok("save", "--format", fmt, "-o", str(archive), "busybox", "example.com/team/tools:1.0")
        assert tarfile.is_tarfile(archive)
        d.ok("rmi", "busybox", "example.com/team/tools:1.0")
        assert image_ids(d) == {}
        out = d.ok("load", "-i", str(archive))
        assert out.splitlines() == ["Loaded image: busybox:latest", "Loaded image: example.com/team/tools:1.0"]
        assert image_ids(d) == before
    assert d.ok("run", "--rm", "example.com/team/tools:1.0", "echo", "runs").strip() == "runs"
    actions = [(e["action"], e["attributes"].get("name")) for e in d.events("--filter", "type=image")]
    assert ("save", "busybox") in actions and ("load", "busybox:latest") in actions


def test_docker_archive_through_skopeo(daemon: Daemon, tmp_path: Path) -> None:
    d = daemon
    image_id = json.loads(d.ok("image", "inspect", "busybox"))[0]["Id"]
    archive = tmp_path / "bb.tar"
    d.ok("save", "-o", str(archive), "busybox")
    # skopeo reads what we wrote: the same config (so the same image id) and layer.
    info = json.loads(skopeo("inspect", "--config", f"docker-archive:{archive}").stdout)
    assert info["rootfs"]["diff_ids"] == json.loads(d.ok("image", "inspect", "busybox"))[0]["RootFS"]["Layers"]
    # ... and converts it to an OCI archive under a new name, which we load and run.
    oci = tmp_path / "from-skopeo.tar"
    skopeo("copy", f"docker-archive:{archive}", f"oci-archive:{oci}:example.com/via/skopeo:oci")
    assert d.ok("load", "-i", str(oci)).strip() == "Loaded image: example.com/via/skopeo:oci"
    assert d.ok("run", "--rm", "example.com/via/skopeo:oci", "echo", "oci-ok").strip() == "oci-ok"
    # skopeo's own docker-archive of our OCI save loads back with the very same id.
    ours = tmp_path / "ours-oci.tar"
    d.ok("save", "--format", "oci", "-o", str(ours), "busybox")
    back = tmp_path / "back.tar"
    skopeo("copy", f"oci-archive:{ours}:latest", f"docker-archive:{back}:example.com/back:1")
    assert d.ok("load", "-i", str(back)).strip() == "Loaded image: example.com/back:1"
    assert image_ids(d)["example.com/back:1"] == image_id


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_bad_archives_get_clear_errors_and_change_nothing(daemon: Daemon, tmp_path: Path) -> None:
    d = daemon
    good = tmp_path / "good.tar"
    d.ok("save", "-o", str(good), "busybox")
    with tarfile.open(good) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    manifest = json.loads(members["manifest.json"])
    layer_name = manifest[0]["Layers"][0]
    tampered_layer = _tar({"bin/evil": b"x"})
    cases = {
        "garbage": (b"this is not a tar", "not a valid image archive"),
        "no manifest": (_tar({"hello.txt": b"hi"}), "neither manifest.json"),
        "wrong layer": (_tar({**members, layer_name: tampered_layer}), "diff id"),
        "missing layer": (_tar({k: v for k, v in members.items() if k != layer_name}), f"no {layer_name}"),
        "escaping path": (_tar({**members, "../../etc/evil": b"x"}), "leaves the archive"),
        "bad manifest": (_tar({**members, "manifest.json": b"{nope"}), "manifest.json: not JSON"),
        "bad oci blob": (_tar({"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": b"{}",
                               "blobs/sha256/" + "0" * 64: b"does not hash to its name"}), "digest"),
    }
    ids, content = image_ids(d), blobs(d)
    for what, (data, message) in cases.items():
        path = tmp_path / f"{what.replace(' ', '-')}.tar"
        path.write_bytes(data)
        out = d.cli("load", "-i", str(path))
        assert out.returncode != 0, what
        assert message in out.stderr, (what, out.stderr)
        assert image_ids(d) == ids, what
        assert blobs(d) == content, what
    assert d.ok("run", "--rm", "busybox", "true") == ""                        # the daemon is fine
    out = d.cli("save", "-o", str(tmp_path / "x.tar"), "no-such-image")
    assert out.returncode != 0 and "no such image" in out.stderr.lower()
    assert not (tmp_path / "x.tar").exists()
