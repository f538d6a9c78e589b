"""`corral commit` on the real kernel: a container's upper dir as a new layer, whiteouts included.

Each test runs its own daemon (``tests/integration/_daemon.py``) with busybox:latest
bootstrapped; the fixture force-removes every container and stops the daemon.
"""

from __future__ import annotations

import json
import os
import stat

import pytest

from runtime.images import ImageStore

from ._daemon import Daemon, daemon_fixture  # noqa: F401 - the `daemon` fixture
from .conftest import wait_for

pytestmark = pytest.mark.root


def _image_inspect(daemon: Daemon, ref: str) -> dict:
    return json.loads(daemon.ok("image", "inspect", ref))[0]


def test_commit_keeps_added_changed_and_deleted_files(daemon: Daemon) -> None:
    # busybox has /etc (empty) and /bin/*: add a file, change a directory, delete an applet and a directory.
    cid = daemon.ok("run", "-d", "busybox", "sh", "-c",
                    "echo added > /added && mkdir -p /etc/app && echo v1 > /etc/app/conf"
                    " && rm /bin/vi && rm -rf /root && echo ready > /ready && sleep 600").strip()
    wait_for(lambda: daemon.cli("exec", cid, "cat", "/ready").stdout == "ready\n", timeout=20,
             what="the container's changes")
    image_id = daemon.ok("commit", "-a", "tester", "-m", "first commit", "-c", 'CMD ["cat", "/added"]',
                         cid, "committed:v1").strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71, image_id
    # The running container was frozen only while packing: it still runs and answers.
    assert daemon.inspect(cid)["State"]["Status"] == "running"
    assert daemon.ok("exec", cid, "echo", "alive") == "alive\n"

    info = _image_inspect(daemon, "committed:v1")
    busybox = _image_inspect(daemon, "busybox")
    assert info["Id"] == image_id
    assert info["Config"]["Cmd"] == ["cat", "/added"]
    assert info["Config"]["Env"] == busybox["Config"]["Env"]             # the rest is the image's config
    assert info["Author"] == "tester" and info["Comment"] == "first commit"
    assert info["Container"] == daemon.inspect(cid)["Id"]
    assert info["RootFS"]["Layers"][:-1] == busybox["RootFS"]["Layers"]   # one layer on top of busybox's

    assert daemon.ok("run", "--rm", "committed:v1") == "added\n"            # -c CMD applied
    assert daemon.ok("run", "--rm", "committed:v1", "cat", "/etc/app/conf") == "v1\n"
    gone = daemon.cli("run", "--rm", "committed:v1", "ls", "/bin/vi")
    assert gone.returncode != 0 and "No such file" in gone.stdout + gone.stderr
    assert daemon.cli("run", "--rm", "committed:v1", "ls", "-d", "/root").returncode != 0
    assert daemon.ok("run", "--rm", "committed:v1", "ls", "/bin/sh").strip() == "/bin/sh"   # others stay
    # The new layer as unpacked: deletions are overlay whiteouts (from the OCI .wh. entries),
    # and the runtime's bind targets (/etc/hostname, hosts, resolv.conf) are not in it.
    top = ImageStore(daemon.data_root).get("committed:v1").layer_dirs[-1]
    assert sorted(os.listdir(top / "etc")) == ["app"]
    for deleted in ("bin/vi", "root"):
        st = os.lstat(top / deleted)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, deleted
    assert (top / "added").read_text() == "added\n"

    events = daemon.events("--filter", "event=commit")
    assert [(e["type"], e["id"], e["attributes"]["imageID"]) for e in events] == [("container", info["Container"],
                                                                                     image_id)]


def test_commit_of_a_stopped_container_and_a_commit_of_the_commit(daemon: Daemon) -> None:
    cid = daemon.ok("create", "busybox", "sh", "-c", "echo one > /one && rm /bin/ls").strip()
    daemon.ok("start", cid)
    assert daemon.ok("wait", cid).strip() == "0"
    first = daemon.ok("commit", "--pause=false", cid).strip()              # untagged: a dangling image
    assert daemon.ok("run", "--rm", first, "cat", "/one") == "one\n"
    second_cid = daemon.ok("create", first, "sh", "-c", "rm /one && echo two > /two").strip()
    daemon.ok("start", second_cid)
    assert daemon.ok("wait", second_cid).strip() == "0"
    daemon.ok("commit", "-c", "ENV STAGE=two", second_cid, "two")
    assert daemon.ok("run", "--rm", "two", "sh", "-c", "cat /two; test -e /one || echo no-one; echo $STAGE") == \
        "two\nno-one\ntwo\n"
    assert daemon.cli("run", "--rm", "two", "/bin/ls").returncode != 0       # deleted two layers below
    assert len(_image_inspect(daemon, "two")["RootFS"]["Layers"]) == 3


def test_commit_errors(daemon: Daemon) -> None:
    cid = daemon.ok("create", "busybox", "true").strip()
    out = daemon.cli("commit", "-c", "RUN echo no", cid)
    assert out.returncode == 125 and "not a valid change command" in out.stderr
    out = daemon.cli("commit", cid, "Bad:Ref!")
    assert out.returncode == 125 and "invalid reference" in out.stderr
    out = daemon.cli("commit", "nonesuch")
    assert out.returncode == 125 and "no such container" in out.stderr
