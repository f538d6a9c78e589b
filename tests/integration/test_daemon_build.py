"""`corral build` on the real kernel: Dockerfiles built by the daemon, RUN steps as containers.

Each test runs its own daemon (``tests/integration/_daemon.py``) with busybox:latest
bootstrapped; the fixture force-removes every container and stops the daemon.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import tarfile
from pathlib import Path

import pytest

from supervisor import build_cli
from supervisor.blocking_client import BlockingClient, RpcError

from ._daemon import Daemon, daemon_fixture  # noqa: F401 - the `daemon` fixture
from .conftest import corral_command, wait_for

pytestmark = pytest.mark.root

MULTI_STAGE = """\
# A two-stage build: the first stage writes a file with RUN, the second copies it.
ARG BASE=busybox
FROM $BASE AS builder
ARG GREETING=hello
WORKDIR /src
COPY greet.sh ./
RUN chmod +x greet.sh \\
 && ./greet.sh "$GREETING" > /src/message
FROM busybox
ENV APP_HOME=/app \\
    MODE="two words"
WORKDIR $APP_HOME
COPY --from=builder /src/message ./
COPY --chown=1000:1000 data/ ./data/
LABEL org.example.kind="test" version=1
EXPOSE 8080 53/udp
USER 1000
STOPSIGNAL SIGUSR1
HEALTHCHECK --interval=5s --timeout=2s --retries=4 CMD test -f /app/message
ENTRYPOINT ["sh", "-c"]
CMD ["cat $APP_HOME/message; id -u; stat -c %u data/x; cat data/x; echo $MODE; pwd"]
"""


def _context(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    ctx = tmp_path / "ctx"
    for name, content in files.items():
        path = ctx / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return ctx


def _build(daemon: Daemon, ctx: Path, *args: str) -> subprocess.CompletedProcess:
    return daemon.cli("build", *args, str(ctx), timeout=120)


def _ok_build(daemon: Daemon, ctx: Path, *args: str) -> str:
    out = _build(daemon, ctx, *args)
    assert out.returncode == 0, (out.stdout, out.stderr, daemon.log.read_text()[-3000:])
    return out.stdout


def _upload_build(daemon: Daemon, ctx: Path, *args: str) -> str:
    """The build as a remote client makes it: the context uploaded as a tar (build_cli rule 2)."""
    out = io.StringIO()
    parsed = build_cli._parser().parse_args(["-H", f"unix://{daemon.socket}", "build", *args, str(ctx)])
    assert build_cli.run_build(parsed, upload=True, out=out) == 0, (out.getvalue(), daemon.log.read_text()[-3000:])
    return out.getvalue()


def _cached(output: str) -> list[bool]:
    """Per step after the first FROM: whether it said ``Using cache``."""
    return ["Using cache" in block for block in output.split("Step ")[2:]]


def _built_id(output: str) -> str:
    m = re.search(r"^Successfully built ([0-9a-f]{12})$", output, re.MULTILINE)
    assert m, output
    return m.group(1)


def _image_inspect(daemon: Daemon, ref: str) -> dict:
    return json.loads(daemon.ok("image", "inspect", ref))[0]


@pytest.fixture
def multi_stage(tmp_path: Path) -> Path:
    ctx = _context(tmp_path, {"Dockerfile": MULTI_STAGE, "greet.sh": "#!/bin/sh\necho \"$1 from builder\"\n",
                              "data/x": "x-content\n"})
    return ctx


def test_multi_stage_build_runs_and_has_the_config(daemon: Daemon, multi_stage: Path) -> None:
    out = _ok_build(daemon, multi_stage, "-t", "app:1", "-t", "app:latest", "--build-arg", "GREETING=hi",
                    "--label", "extra=yes")
    steps = re.findall(r"^Step (\d+)/(\d+) : (.*)$", out, re.MULTILINE)
    assert [int(n) for n, _, _ in steps] == list(range(1, 19)) and {m for _, m, _ in steps} == {"18"}, out
    assert steps[0][2] == "FROM $BASE AS builder" and steps[-1][2] == 'LABEL "extra"="yes"'
    assert "Running in" in out and "Using cache" not in out
    assert out.rstrip().endswith("Successfully tagged app:1\nSuccessfully tagged app:latest"), out

    assert daemon.ok("run", "--rm", "app:1") == "hi from builder\n1000\n1000\nx-content\ntwo words\n/app\n"
    info = _image_inspect(daemon, "app:1")
    assert info["Id"].removeprefix("sha256:")[:12] == _built_id(out)
    c = info["Config"]
    assert "APP_HOME=/app" in c["Env"] and "MODE=two words" in c["Env"]
    assert c["WorkingDir"] == "/app" and c["User"] == "1000" and c["StopSignal"] == "SIGUSR1"
    assert c["Entrypoint"] == ["sh", "-c"]
    assert c["Cmd"] == ["cat $APP_HOME/message; id -u; stat -c %u data/x; cat data/x; echo $MODE; pwd"]
    assert c["ExposedPorts"] == {"53/udp": {}, "8080/tcp": {}}
    assert c["Labels"] == {"org.example.kind": "test", "version": "1", "extra": "yes"}
    assert c["Healthcheck"] == {"Test": ["CMD-SHELL", "test -f /app/message"], "Interval": 5_000_000_000,
                                "Timeout": 2_000_000_000, "Retries": 4}
    # The second stage is busybox plus the layers of WORKDIR and the two COPYs: the
    # first stage's RUN layer is not in it.
    assert len(info["RootFS"]["Layers"]) == len(_image_inspect(daemon, "busybox")["RootFS"]["Layers"]) + 3
    # A health check read from the image: the container goes healthy.
    cid = daemon.ok("run", "-d", "app:1", "sleep 30").strip()
    wait_for(lambda: daemon.inspect(cid)["State"].get("Health", {}).get("Status") == "healthy", timeout=20,
             what="the image's health check to pass")
    events = daemon.events("--filter", "type=image")
    assert ("build", "app:1") in [(e["action"], e["attributes"].get("name")) for e in events]


def test_rebuild_uses_the_cache_for_every_step_and_no_cache_does_not(daemon: Daemon, multi_stage: Path) -> None:
    first = _ok_build(daemon, multi_stage, "-t", "app:1")
    again = _ok_build(daemon, multi_stage, "-t", "app:1")
    steps = len(re.findall(r"^Step ", again, re.MULTILINE))
    # Every step but the two FROMs says so, and none runs a container.
    assert again.count(" ---> Using cache\n") == steps - 2, again
    assert "Running in" not in again
    assert _built_id(again) == _built_id(first)

    fresh = _ok_build(daemon, multi_stage, "--no-cache", "-t", "app:2")
    assert "Using cache" not in fresh and "Running in" in fresh
    assert _built_id(fresh) != _built_id(first)
    assert daemon.ok("run", "--rm", "app:2").startswith("hello from builder\n")

    # A changed build arg invalidates the RUN that sees it, and what follows it.
    changed = _ok_build(daemon, multi_stage, "--build-arg", "GREETING=hey", "-t", "app:3")
    assert "Running in" in changed
    assert daemon.ok("run", "--rm", "app:3").startswith("hey from builder\n")


def test_a_copy_change_invalidates_exactly_the_steps_after_it(daemon: Daemon, tmp_path: Path) -> None:
    ctx = _context(tmp_path, {"Dockerfile": "FROM busybox\nRUN echo one > /one\nCOPY f /f\nRUN cat /f > /g\n"
                                            "CMD cat /one /g\n",
                              "f": "first\n"})
    first = _ok_build(daemon, ctx, "-t", "copied")
    out = _ok_build(daemon, ctx)
    assert out.count("Using cache") == 4
    (ctx / "f").write_text("second\n")
    out = _ok_build(daemon, ctx, "-t", "copied")
    blocks = out.split("Step ")[1:]
    assert ["Using cache" in b for b in blocks] == [False, True, False, False, False], out
    assert daemon.ok("run", "--rm", "copied") == "one\nsecond\n"
    # rmi of a cached intermediate (the RUN echo one image) drops its entry; the rebuild runs it again.
    intermediate = re.findall(r" ---> ([0-9a-f]{12})\n", first)[1]
    daemon.ok("rmi", intermediate)
    out = _ok_build(daemon, ctx, "-t", "copied")
    blocks = out.split("Step ")[1:]
    assert ["Using cache" in b for b in blocks][1] is False, out
    assert daemon.ok("run", "--rm", "copied") == "one\nsecond\n"


def test_a_failing_run_names_the_step_and_the_code(daemon: Daemon, tmp_path: Path) -> None:
    ctx = _context(tmp_path, {"Dockerfile": "FROM busybox\nRUN echo before\nRUN echo failing; exit 3\n"
                                            "RUN echo never\n"})
    out = _build(daemon, ctx, "-t", "broken")
    assert out.returncode == 1, out
    assert "before\n" in out.stdout and "failing\n" in out.stdout and "never" not in out.stdout
    assert "Step 3/4 : RUN echo failing; exit 3" in out.stderr
    assert "returned a non-zero code: 3" in out.stderr
    assert daemon.ok("ps", "-aq") == ""                        # the step's container is gone
    assert daemon.cli("image", "inspect", "broken").returncode != 0
    missing = _build(daemon, _context(tmp_path / "m", {"Dockerfile": "FROM busybox\nRUN nonesuch-command\n"}))
    assert missing.returncode == 1 and "Step 2/2 : RUN nonesuch-command" in missing.stderr
    assert "returned a non-zero code: 127" in missing.stderr


def test_a_malformed_dockerfile_names_the_line(daemon: Daemon, tmp_path: Path) -> None:
    ctx = _context(tmp_path, {"Dockerfile": "FROM busybox\nRUN true\n\n# a comment\nCOPYY a b\n"})
    out = _build(daemon, ctx)
    assert out.returncode == 1
    assert "Dockerfile:5: unknown instruction: COPYY" in out.stderr
    out = _build(daemon, _context(tmp_path / "b", {"Dockerfile": "FROM busybox\nCOPY onlyone\n"}))
    assert out.returncode == 1 and "Dockerfile:2: COPY requires at least two arguments" in out.stderr
    out = _build(daemon, _context(tmp_path / "c", {"Dockerfile": "FROM nonesuch:1\n"}))
    assert out.returncode == 1 and "Dockerfile:1: FROM nonesuch:1: no such image" in out.stderr
    out = _build(daemon, _context(tmp_path / "d", {"Dockerfile": "FROM busybox\nCOPY nothere /x\n"}))
    assert out.returncode == 1 and "Step 2/2 : COPY nothere /x" in out.stderr and "nothere" in out.stderr


@pytest.mark.parametrize("way", ["directory", "upload"])
def test_dockerignore_excludes_files(daemon: Daemon, tmp_path: Path, way: str) -> None:
    ctx = _context(tmp_path, {
        "Dockerfile": "FROM busybox\nCOPY . /ctx/\nCMD find /ctx\n",
        ".dockerignore": "# comments and blank lines are skipped\n\nsecret.txt\nlogs\n*.tmp\n!keep.tmp\n",
        "keep.txt": "k\n", "secret.txt": "s\n", "logs/a.log": "l\n", "x.tmp": "t\n", "keep.tmp": "kt\n",
        "sub/inner.txt": "i\n",
    })
    if way == "directory":
        _ok_build(daemon, ctx, "-t", "ignored")
    else:
        _upload_build(daemon, ctx, "-t", "ignored")
    listed = sorted(daemon.ok("run", "--rm", "ignored").split())
    assert listed == ["/ctx", "/ctx/.dockerignore", "/ctx/Dockerfile", "/ctx/keep.tmp", "/ctx/keep.txt", "/ctx/sub",
                      "/ctx/sub/inner.txt"]


def test_add_extracts_a_local_tar_and_copy_does_not(daemon: Daemon, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("a/b.txt", b"inside\n"), ("c.txt", b"top\n")):
            info = tarfile.TarInfo(name)
            info.size, info.uid, info.gid, info.mode = len(data), 123, 456, 0o640
            tar.addfile(info, io.BytesIO(data))
    ctx = _context(tmp_path, {
        "Dockerfile": "FROM busybox\nADD stuff.tar.gz /opt/\nCOPY stuff.tar.gz /raw/\nADD plain.txt /opt/plain\n"
                      "CMD cat /opt/a/b.txt /opt/c.txt /opt/plain; stat -c '%u:%g %a' /opt/c.txt; ls /raw\n",
        "stuff.tar.gz": buf.getvalue(), "plain.txt": "plain\n",
    })
    _ok_build(daemon, ctx, "-t", "added")
    assert daemon.ok("run", "--rm", "added") == "inside\ntop\nplain\n123:456 640\nstuff.tar.gz\n"


def test_onbuild_shell_volume_scratch_and_target(daemon: Daemon, tmp_path: Path) -> None:
    base = _context(tmp_path / "base", {
        "Dockerfile": "FROM busybox\nONBUILD RUN echo triggered > /trig\nONBUILD COPY hello /hello\n",
    })
    _ok_build(daemon, base, "-t", "onbase")
    assert _image_inspect(daemon, "onbase")["Config"]["OnBuild"] == ["RUN echo triggered > /trig",
                                                                    "COPY hello /hello"]
    child = _context(tmp_path / "child", {
        "Dockerfile": 'FROM onbase AS first\nSHELL ["/bin/sh", "-ec"]\nRUN echo "shell: $0" > /shell\n'
                      "VOLUME /data\n"
                      "FROM scratch AS bare\nCOPY --from=first /bin/busybox /bin/busybox\n"
                      'CMD ["/bin/busybox", "echo", "from scratch"]\n'
                      "FROM first\nCMD cat /trig /hello /shell\n",
        "hello": "hello\n",
    })
    out = _ok_build(daemon, child, "-t", "onchild")
    assert "# Executing 2 build triggers" in out
    assert daemon.ok("run", "--rm", "onchild") == "triggered\nhello\nshell: /bin/sh\n"
    info = _image_inspect(daemon, "onchild")
    assert info["Config"]["Volumes"] == {"/data": {}} and info["Config"]["Shell"] == ["/bin/sh", "-ec"]
    assert "OnBuild" not in info["Config"]                      # triggers are not inherited
    _ok_build(daemon, child, "--target", "bare", "-t", "bare")
    assert daemon.ok("run", "--rm", "bare") == "from scratch\n"
    assert len(_image_inspect(daemon, "bare")["RootFS"]["Layers"]) == 1
    out = _build(daemon, child, "--target", "nonesuch")
    assert out.returncode == 1 and "target stage 'nonesuch' could not be found" in out.stderr


def test_intermediate_images_only_with_all(daemon: Daemon, tmp_path: Path) -> None:
    ctx = _context(tmp_path, {"Dockerfile": "FROM busybox\nENV A=1\nRUN echo x > /x\nCMD [\"cat\", \"/x\"]\n"})
    final = _built_id(_ok_build(daemon, ctx, "-t", "layered:1"))
    shown = {i["Id"].removeprefix("sha256:")[:12] for i in daemon.json_lines("images")}
    every = {i["Id"].removeprefix("sha256:")[:12] for i in daemon.json_lines("images", "-a")}
    assert final in shown and len(shown) == 2                          # busybox and layered:1
    assert shown < every and len(every - shown) == 2                   # the ENV and RUN steps' images
    assert daemon.json_lines("images", "--filter", "dangling=true") == []   # intermediates are not dangling


COPY_STEPS = """\
FROM busybox
RUN echo one > /one
COPY f /f
RUN cat /f > /g
COPY d/ /d/
RUN ls -ln /d > /listing
CMD cat /one /g /listing
"""


def test_each_kind_of_change_to_a_copy_source_invalidates_exactly_the_steps_from_it(
        daemon: Daemon, tmp_path: Path) -> None:
    ctx = _context(tmp_path, {"Dockerfile": COPY_STEPS, "f": "first\n", "d/x": "x\n", "d/y": "y\n"})
    _ok_build(daemon, ctx, "-t", "steps")
    assert _cached(_ok_build(daemon, ctx, "-t", "steps")) == [True] * 6       # unchanged: every step

    os.utime(ctx / "f", (0, 0))                                               # a time alone: still cached
    os.utime(ctx / "d" / "x", (0, 0))
    assert _cached(_ok_build(daemon, ctx)) == [True] * 6

    (ctx / "d" / "x").write_text("X\n")                                       # content below a directory
    assert _cached(_ok_build(daemon, ctx)) == [True, True, True, False, False, False]
    os.chmod(ctx / "d" / "y", 0o600)                                          # a mode
    assert _cached(_ok_build(daemon, ctx)) == [True, True, True, False, False, False]
    os.chown(ctx / "d" / "y", 1000, 1000)                                     # an owner
    assert _cached(_ok_build(daemon, ctx)) == [True, True, True, False, False, False]
    os.rename(ctx / "d" / "y", ctx / "d" / "z")                               # a rename
    assert _cached(_ok_build(daemon, ctx)) == [True, True, True, False, False, False]
    (ctx / "f").write_text("second\n")                                        # the first COPY's file
    out = _ok_build(daemon, ctx, "-t", "steps")
    assert _cached(out) == [True, False, False, False, False, False]
    assert _cached(_ok_build(daemon, ctx, "-t", "steps")) == [True] * 6
    listing = daemon.ok("run", "--rm", "steps")
    assert listing.startswith("one\nsecond\n") and " x\n" in listing and " z\n" in listing and " y\n" not in listing
    (ctx / "unrelated").write_text("not copied by name\n")                   # outside every source
    assert _cached(_ok_build(daemon, ctx)) == [True] * 6


def test_the_directory_and_the_upload_share_one_cache(daemon: Daemon, multi_stage: Path) -> None:
    first = _ok_build(daemon, multi_stage, "-t", "app:1")
    steps = len(re.findall(r"^Step ", first, re.MULTILINE))
    uploaded = _upload_build(daemon, multi_stage, "-t", "app:1")
    assert uploaded.count(" ---> Using cache\n") == steps - 2 and "Running in" not in uploaded, uploaded
    assert _built_id(uploaded) == _built_id(first)
    # And the other way round, after a change: the upload builds, the directory reuses it.
    (multi_stage / "data" / "x").write_text("changed\n")
    changed = _upload_build(daemon, multi_stage, "-t", "app:2")
    assert "Using cache" in changed and _built_id(changed) != _built_id(first)
    again = _ok_build(daemon, multi_stage, "-t", "app:2")
    assert again.count(" ---> Using cache\n") == steps - 2, again
    assert _built_id(again) == _built_id(changed)
    assert daemon.ok("run", "--rm", "app:2").split("\n")[3] == "changed"


def test_a_directory_the_daemon_does_not_see_is_refused_so_the_client_uploads(daemon: Daemon, tmp_path: Path) -> None:
    ctx = _context(tmp_path, {"Dockerfile": "FROM busybox\nCOPY f /f\n", "f": "f\n"})
    st = os.stat(ctx)
    with BlockingClient(str(daemon.socket)) as conn:
        for where in ({"path": str(ctx), "device": st.st_dev, "inode": st.st_ino + 1},
                      {"path": str(tmp_path / "elsewhere"), "device": st.st_dev, "inode": st.st_ino}):
            with pytest.raises(RpcError) as err:
                list(conn.stream("image.build", dockerfile="FROM busybox\n", context=where))
            assert err.value.details == {"reason": build_cli.CONTEXT_UNAVAILABLE}, err.value
        with pytest.raises(RpcError, match="one of the two"):
            list(conn.stream("image.build", dockerfile="FROM busybox\n"))
    assert daemon.cli("images", "-aq").stdout.split() == daemon.cli("images", "-q").stdout.split()


def test_a_bad_dockerignore_is_reported_by_the_daemon(daemon: Daemon, tmp_path: Path) -> None:
    ctx = _context(tmp_path, {"Dockerfile": "FROM busybox\nCOPY . /x/\n", ".dockerignore": "[unclosed\n"})
    out = _build(daemon, ctx)
    assert out.returncode == 1 and ".dockerignore" in out.stderr, out


def _image_ids(daemon: Daemon, *flags: str) -> set[str]:
    return {r["Id"] for r in daemon.json_lines("images", *flags)}


def _image(daemon: Daemon, ref: str) -> dict:
    return json.loads(daemon.ok("image", "inspect", ref))[0]


def test_rmi_takes_the_untagged_parents_a_build_left_unless_told_not_to(daemon: Daemon, tmp_path: Path) -> None:
    base = "FROM busybox\nENV STEP=1\nRUN echo one > /one\n"
    ctx = _context(tmp_path, {"Dockerfile": base + "RUN echo two > /two\n"})
    daemon.ok("build", "-q", "-t", "app:1", str(ctx))
    (ctx / "Dockerfile").write_text(base + "RUN echo other > /other\n")
    daemon.ok("build", "-q", "-t", "app:2", str(ctx))       # shares ENV and the first RUN with app:1
    app1, app2 = _image(daemon, "app:1"), _image(daemon, "app:2")
    shared = app1["Parent"]                                   # the first RUN's image: a parent of both
    assert shared and shared == app2["Parent"]
    busybox = daemon.json_lines("images", "--filter", "reference=busybox")[0]["Id"]
    intermediates = _image_ids(daemon, "-a") - _image_ids(daemon)
    assert shared in intermediates and busybox not in intermediates

    # image prune (dangling) leaves intermediates alone while their children are there
    daemon.ok("image", "prune", "-f")
    assert shared in _image_ids(daemon, "-a")

    out = daemon.ok("rmi", "app:1")
    assert out.splitlines() == ["Untagged: app:1", f"Deleted: {app1['Id']}"]   # the shared parent stays
    assert shared in _image_ids(daemon, "-a")

    out = daemon.ok("rmi", "--no-prune", "app:2")
    assert out.splitlines() == ["Untagged: app:2", f"Deleted: {app2['Id']}"]
    assert shared in _image_ids(daemon, "-a")                # kept: --no-prune

    # Now the shared parent is dangling: rmi of it takes its own untagged parents, down to busybox.
    out = daemon.ok("rmi", shared).splitlines()
    env_step = out[1].partition(": ")[2] if len(out) == 2 else None
    assert out == [f"Deleted: {shared}", f"Deleted: {env_step}"], out     # the first RUN's image, then ENV's
    assert _image_ids(daemon, "-a") == {busybox}
    assert daemon.ok("run", "--rm", "busybox", "true") == ""
    deletes = {e["id"] for e in daemon.events("--filter", "type=image", "--filter", "event=delete")}
    assert {app1["Id"], app2["Id"], shared, env_step} <= deletes


def test_rmi_keeps_a_parent_a_container_uses(daemon: Daemon, tmp_path: Path) -> None:
    ctx = _context(tmp_path, {"Dockerfile": "FROM busybox\nRUN echo one > /one\nRUN echo two > /two\n"})
    daemon.ok("build", "-q", "-t", "app:1", str(ctx))
    parent = _image(daemon, "app:1")["Parent"]
    daemon.ok("create", "--name", "user", parent, "true")
    out = daemon.ok("rmi", "app:1").splitlines()
    assert len(out) == 2 and out[0] == "Untagged: app:1" and out[1].startswith("Deleted: "), out
    assert parent in _image_ids(daemon, "-a")                 # the container's image stays


def test_a_build_the_daemon_died_in_leaves_nothing_behind(tmp_path: Path, cgroup_parent: str) -> None:
    d = Daemon(tmp_path, cgroup_parent)
    d.start()
    try:
        d.ok("image", "bootstrap", "busybox")
        ctx = _context(tmp_path, {"Dockerfile": "FROM busybox\nRUN sleep 1000\n"})
        before = _image_ids(d, "-a")
        build = subprocess.Popen([*corral_command(), "-H", f"unix://{d.socket}", "build", str(ctx)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            step = wait_for(lambda: d.json_lines("ps", "--filter", "label=corral.build=run"), timeout=30,
                            what="the RUN step's container")[0]
            pid = d.inspect(step["Id"])["State"]["Pid"]
            # An image view left mounted in a build's scratch dir, as a crash in a COPY leaves it.
            view = d.data_root / "tmp" / "build-left" / "view-1"
            view.mkdir(parents=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(view)], check=True)
            assert d.stop(signal.SIGKILL) == -signal.SIGKILL
        finally:
            build.wait(timeout=60)
        d.start()
        assert d.json_lines("ps", "-a") == []                    # the RUN step's container is gone...
        wait_for(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text(),
                 timeout=20, what="its process to be killed")     # ...and so is its process
        assert _image_ids(d, "-a") == before
        assert not view.exists() and str(view) not in Path("/proc/self/mountinfo").read_text()
    finally:
        d.close()
