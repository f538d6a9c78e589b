"""The runc lifecycle through `corral runtime`: create, start, pause, resume, kill,
delete, and the read-only verbs (state, list, ps, events) along the way."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from .conftest import container_state, corral, corral_detached, wait_for

pytestmark = pytest.mark.root

# A counter the container bumps ten times a second, in a directory we bind-mount.
COUNTER = 'trap "exit 0" TERM; i=0; while :; do i=$((i+1)); echo $i > /root/count; sleep 0.1; done'


def bind(source: Path, destination: str = "/root"):
    def edit(config: dict) -> None:
        config["mounts"].append({"destination": destination, "type": "bind", "source": str(source),
                                 "options": ["rbind", "rw"]})
    return edit


def read_count(path: Path) -> int | None:
    """The counter, or None while the shell is between truncating and writing it."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def proc_state(pid: int) -> str:
    raw = Path(f"/proc/{pid}/stat").read_bytes()
    return raw[raw.rindex(b")") + 2:raw.rindex(b")") + 3].decode()


def test_full_lifecycle(bundle, state_root, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    count = shared / "count"
    b = bundle.write(["sh", "-c", COUNTER], cgroup="life", edit=bind(shared))

    created = corral_detached(state_root, tmp_path, "create", "-b", str(b), "life")
    assert (created.returncode, created.stderr) == (0, "")
    s = container_state(state_root, "life")
    assert s["status"] == "created" and s["pid"] > 0
    assert (s["id"], s["bundle"]) == ("life", str(b))
    pid = s["pid"]
    time.sleep(0.3)
    assert not count.exists(), "the command ran before start"

    assert corral(state_root, "start", "life").returncode == 0
    assert container_state(state_root, "life")["status"] == "running"
    wait_for(lambda: (read_count(count) or 0) >= 2, what="the counter to move")

    assert corral(state_root, "pause", "life").returncode == 0
    assert container_state(state_root, "life") == {**s, "status": "paused"}
    # Frozen maybe between truncating and writing the file: then it stays empty.
    frozen_at = read_count(count)
    time.sleep(0.5)                # five ticks of the counter, had it run
    assert read_count(count) == frozen_at
    assert corral(state_root, "start", "life").returncode == 1

    assert corral(state_root, "resume", "life").returncode == 0
    assert container_state(state_root, "life")["status"] == "running"
    before = wait_for(lambda: read_count(count), what="a count")
    wait_for(lambda: (read_count(count) or 0) > before, what="progress after resume")

    assert corral(state_root, "kill", "life", "TERM").returncode == 0
    wait_for(lambda: container_state(state_root, "life")["status"] == "stopped", what="stopped")
    assert container_state(state_root, "life")["pid"] == 0
    assert not Path(f"/proc/{pid}").exists() or proc_state(pid) in "ZX"

    assert corral(state_root, "delete", "life").returncode == 0
    listed = corral(state_root, "list", "--format", "json")
    assert (listed.returncode, json.loads(listed.stdout)) == (0, [])
    assert not (state_root / "life").exists()
    gone = corral(state_root, "state", "life")
    assert (gone.returncode, gone.stderr) == (1, "corral runtime: container life does not exist\n")


def test_paused_processes_are_frozen(bundle, state_root, tmp_path):
    b = bundle.write(["sh", "-c", "while :; do :; done"], cgroup="frz")
    assert corral_detached(state_root, tmp_path, "run", "-d", "-b", str(b), "frz").returncode == 0
    pid = container_state(state_root, "frz")["pid"]
    assert proc_state(pid) == "R"
    assert corral(state_root, "pause", "frz").returncode == 0
    # A frozen task sleeps in the freezer (v1 shows D, v2 S); it is never runnable.
    samples = set()
    for _ in range(10):
        samples.add(proc_state(pid))
        time.sleep(0.02)
    assert samples <= {"D", "S"}
    assert corral(state_root, "resume", "frz").returncode == 0
    wait_for(lambda: proc_state(pid) == "R", what="runnable again")
    assert corral(state_root, "delete", "-f", "frz").returncode == 0


def test_pause_and_resume_refuse_wrong_states(bundle, state_root, tmp_path):
    b = bundle.write(["sleep", "100"], cgroup="pr")
    assert corral_detached(state_root, tmp_path, "run", "-d", "-b", str(b), "pr").returncode == 0
    out = corral(state_root, "resume", "pr")
    assert (out.returncode, out.stderr) == (1, "corral runtime: container not paused\n")
    assert corral(state_root, "pause", "pr").returncode == 0
    assert corral(state_root, "resume", "pr").returncode == 0
    assert corral(state_root, "kill", "pr", "KILL").returncode == 0
    wait_for(lambda: container_state(state_root, "pr")["status"] == "stopped", what="stopped")
    out = corral(state_root, "pause", "pr")
    assert (out.returncode, out.stderr) == (1, "corral runtime: container not running (stopped)\n")
    assert corral(state_root, "delete", "pr").returncode == 0


def test_delete_running_needs_force(bundle, state_root, tmp_path):
    b = bundle.write(["sleep", "100"], cgroup="del")
    assert corral_detached(state_root, tmp_path, "run", "-d", "-b", str(b), "del").returncode == 0
    pid = container_state(state_root, "del")["pid"]
    out = corral(state_root, "delete", "del")
    assert (out.returncode, out.stderr) == (
        1, "corral runtime: cannot delete container del that is not stopped: running\n")
    assert container_state(state_root, "del")["status"] == "running"
    assert corral(state_root, "delete", "-f", "del").returncode == 0
    assert corral(state_root, "list", "-q").stdout == ""
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or proc_state(pid) in "ZX", what="the init to die")


def test_delete_force_a_paused_container(bundle, state_root, tmp_path):
    b = bundle.write(["sleep", "100"], cgroup="dp")
    assert corral_detached(state_root, tmp_path, "run", "-d", "-b", str(b), "dp").returncode == 0
    pid = container_state(state_root, "dp")["pid"]
    assert corral(state_root, "pause", "dp").returncode == 0
    assert corral(state_root, "delete", "dp").returncode == 1
    assert corral(state_root, "delete", "-f", "dp").returncode == 0
    assert corral(state_root, "list", "-q").stdout == ""
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or proc_state(pid) in "ZX", what="the init to die")


def test_delete_created_container(bundle, state_root, tmp_path):
    b = bundle.write(["sleep", "100"], cgroup="dc")
    assert corral_detached(state_root, tmp_path, "create", "-b", str(b), "dc").returncode == 0
    pid = container_state(state_root, "dc")["pid"]
    assert corral(state_root, "delete", "dc").returncode == 0
    assert corral(state_root, "list", "-q").stdout == ""
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or proc_state(pid) in "ZX", what="the init to die")


def test_list_table_and_json(bundle, state_root, tmp_path):
    assert corral(state_root, "list").stdout == "ID   PID   STATUS   BUNDLE   CREATED   OWNER\n"
    for cid in ("a1", "b2"):
        d = tmp_path / f"bundle-{cid}"
        d.mkdir()
        bundle.write(["sleep", "100"], cgroup=cid)
        (d / "config.json").write_text((bundle.path / "config.json").read_text())
        verb = ("create",) if cid == "a1" else ("run", "-d")
        assert corral_detached(state_root, tmp_path, *verb, "-b", str(d), cid).returncode == 0
    listed = json.loads(corral(state_root, "list", "--format", "json").stdout)
    assert [(s["id"], s["status"]) for s in listed] == [("a1", "created"), ("b2", "running")]
    assert listed == [container_state(state_root, "a1"), container_state(state_root, "b2")]
    assert corral(state_root, "list", "-q").stdout == "a1\nb2\n"
    table = corral(state_root, "list").stdout.splitlines()
    assert table[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    rows = [line.split() for line in table[1:]]
    assert [(r[0], int(r[1]), r[2], r[3], r[5]) for r in rows] == [
        (s["id"], s["pid"], s["status"], s["bundle"], "root") for s in listed]
    for cid in ("a1", "b2"):
        assert corral(state_root, "delete", "-f", cid).returncode == 0
    assert json.loads(corral(state_root, "list", "--format", "json").stdout) == []


def test_ps_lists_the_init_host_pid(bundle, state_root, tmp_path):
    b = bundle.write(["sh", "-c", "sleep 100 & sleep 100 & wait"], cgroup="ps")
    assert corral_detached(state_root, tmp_path, "run", "-d", "-b", str(b), "ps").returncode == 0
    init = container_state(state_root, "ps")["pid"]

    def three() -> list[int] | None:
        pids = json.loads(corral(state_root, "ps", "--format", "json", "ps").stdout)
        return pids if len(pids) == 3 else None

    pids = wait_for(three, what="three processes")
    assert init in pids
    for pid in pids:
        assert Path(f"/proc/{pid}").exists()       # host PIDs, not the namespace's 1, 2, 3
    table = corral(state_root, "ps", "ps")
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert "PID" in lines[0].split()
    col = lines[0].split().index("PID")
    assert sorted(int(line.split()[col]) for line in lines[1:]) == sorted(pids)
    assert corral(state_root, "delete", "-f", "ps").returncode == 0


def test_events_stats_prints_runc_json(bundle, state_root, tmp_path):
    b = bundle.write(["sleep", "100"], cgroup="ev", edit=lambda c: c["linux"].setdefault("resources", {}).update(
        memory={"limit": 64 << 20}, pids={"limit": 50}))
    assert corral_detached(state_root, tmp_path, "run", "-d", "-b", str(b), "ev").returncode == 0
    out = corral(state_root, "events", "--stats", "ev")
    assert out.returncode == 0 and out.stdout.count("\n") == 1
    ev = json.loads(out.stdout)
    assert (ev["type"], ev["id"]) == ("stats", "ev")
    data = ev["data"]
    assert data["memory"]["usage"]["limit"] == 64 << 20
    assert 0 < data["memory"]["usage"]["usage"] <= 64 << 20
    assert data["pids"] == {"current": 1, "limit": 50}
    assert data["cpu"]["usage"]["total"] > 0
    assert isinstance(data["cpu"]["usage"]["percpu"], list)
    assert data["oom_kill"] == 0
    assert corral(state_root, "delete", "-f", "ev").returncode == 0


def test_pid_file_is_written(bundle, state_root, tmp_path):
    for verb, cid in ((("create",), "pf"), (("run", "-d"), "pf2")):
        b = bundle.write(["sleep", "100"], cgroup=cid)
        pid_file = tmp_path / f"{cid}.pid"
        done = corral_detached(state_root, tmp_path, *verb, "--pid-file", str(pid_file), "-b", str(b), cid)
        assert done.returncode == 0, done.stderr
        assert pid_file.read_text().strip() == str(container_state(state_root, cid)["pid"])
        assert not Path(f"{pid_file}.tmp").exists()
    for cid in ("pf", "pf2"):
        assert corral(state_root, "delete", "-f", cid).returncode == 0


def test_pid_file_of_foreground_run(bundle, state_root, tmp_path):
    pid_file = tmp_path / "fg.pid"
    b = bundle.write(["sh", "-c", "echo $$"], cgroup="fg")
    out = corral(state_root, "run", "--pid-file", str(pid_file), "-b", str(b), "fg")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "1"         # PID 1 inside ...
    assert int(pid_file.read_text()) > 1             # ... and its host PID in the file


def test_duplicate_id_is_refused(bundle, state_root, tmp_path):
    b = bundle.write(["sleep", "100"], cgroup="dup")
    assert corral_detached(state_root, tmp_path, "run", "-d", "-b", str(b), "dup").returncode == 0
    before = container_state(state_root, "dup")
    b2 = tmp_path / "other"
    b2.mkdir()
    bundle.write(["sleep", "100"], cgroup="dup2")
    (b2 / "config.json").write_text((bundle.path / "config.json").read_text())
    out = corral(state_root, "run", "-b", str(b2), "dup")
    assert (out.returncode, out.stderr) == (1, "corral runtime: container with id dup already exists\n")
    out = corral_detached(state_root, tmp_path, "create", "-b", str(b2), "dup")
    assert (out.returncode, out.stderr) == (1, "corral runtime: container with id dup already exists\n")
    assert container_state(state_root, "dup") == before
    assert corral(state_root, "delete", "-f", "dup").returncode == 0


def test_start_twice_is_refused(bundle, state_root, tmp_path):
    b = bundle.write(["sleep", "100"], cgroup="st")
    assert corral_detached(state_root, tmp_path, "create", "-b", str(b), "st").returncode == 0
    assert corral(state_root, "start", "st").returncode == 0
    out = corral(state_root, "start", "st")
    assert out.returncode == 1
    assert out.stderr.startswith("corral runtime: cannot start a container in the running state")
    assert out.stderr.count("\n") == 1
    assert container_state(state_root, "st")["status"] == "running"
    assert corral(state_root, "delete", "-f", "st").returncode == 0


def test_start_a_stopped_container_is_refused(bundle, state_root, tmp_path):
    b = bundle.write(["true"], cgroup="ss")
    assert corral_detached(state_root, tmp_path, "create", "-b", str(b), "ss").returncode == 0
    assert corral(state_root, "start", "ss").returncode == 0
    wait_for(lambda: container_state(state_root, "ss")["status"] == "stopped", what="stopped")
    out = corral(state_root, "start", "ss")
    assert out.returncode == 1 and "stopped" in out.stderr
    assert corral(state_root, "delete", "ss").returncode == 0


@pytest.mark.parametrize("verb", ["state", "start", "kill", "delete", "pause", "resume", "ps", "events"])
def test_verbs_on_a_missing_container(state_root, verb):
    args = [verb, "--stats", "nope"] if verb == "events" else [verb, "nope"]
    out = corral(state_root, *args)
    assert (out.returncode, out.stdout, out.stderr) == (1, "", "corral runtime: container nope does not exist\n")


def test_invalid_id_is_refused(bundle, state_root):
    b = bundle.write(["true"], cgroup="bad")
    out = corral(state_root, "run", "-b", str(b), "../escape")
    assert out.returncode == 1 and "invalid container id" in out.stderr
    assert not (state_root.parent / "escape").exists()


def test_paused_created_container_is_paused_and_start_refuses(bundle, state_root, tmp_path):
    b = bundle.write(["sleep", "100"], cgroup="pc")
    assert corral_detached(state_root, tmp_path, "create", "-b", str(b), "pc").returncode == 0
    try:
        assert corral(state_root, "pause", "pc").returncode == 0
        assert container_state(state_root, "pc")["status"] == "paused"
        out = corral(state_root, "start", "pc", timeout=10)
        assert out.returncode == 1 and "paused" in out.stderr
        assert corral(state_root, "resume", "pc").returncode == 0
        assert container_state(state_root, "pc")["status"] == "created"
        assert corral(state_root, "start", "pc").returncode == 0
        assert container_state(state_root, "pc")["status"] == "running"
    finally:
        corral(state_root, "delete", "-f", "pc")
