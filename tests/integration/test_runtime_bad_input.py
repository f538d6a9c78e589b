"""Bad bundles and configs: `corral runtime run` / `create` refuse them with one
line on stderr that names the cause, the right exit code (1; 127 not found; 126
not executable), and leave nothing behind: no state directory, no container in
`list`, no process, no cgroup (the cgroup_parent fixture fails the test then)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from .conftest import corral, with_resources

pytestmark = pytest.mark.root

TIMEOUT = 30
VERBS = [("run",), ("run", "-d"), ("create",)]


def attempt(state_root: Path, verb: tuple[str, ...], bundle_dir: Path, cid: str = "bad") -> subprocess.CompletedProcess:
    # On success create/run -d would leave a container holding our pipes; every
    # case here must fail, so pipes are fine (and the timeout bounds a surprise).
    return corral(state_root, *verb, "-b", str(bundle_dir), cid, timeout=TIMEOUT)


def processes_in(cgroup_parent: str) -> list[int]:
    """Host PIDs whose cgroup (in any hierarchy) is under our private parent."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"/{cgroup_parent}/" in (entry / "cgroup").read_text():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def assert_refused(out: subprocess.CompletedProcess, state_root: Path, cgroup_parent: str, *,
                   code: int, says: tuple[str, ...], cid: str = "bad") -> None:
    assert out.returncode == code, out.stderr
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and out.stderr.endswith("\n"), out.stderr
    assert lines[0].startswith("corral runtime: "), lines[0]
    for word in says:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert "Traceback" not in out.stderr
    assert not (state_root / cid).exists()
    listed = corral(state_root, "list", "-q", timeout=TIMEOUT)
    assert (listed.returncode, listed.stdout) == (0, "")
    assert processes_in(cgroup_parent) == []


@pytest.fixture(params=VERBS, ids=lambda v: " ".join(v))
def verb(request) -> tuple[str, ...]:
    return request.param


# --- the bundle and config.json -------------------------------------------------------------


def test_missing_bundle_directory(state_root, tmp_path, cgroup_parent, verb):
    missing = tmp_path / "no-such-bundle"
    out = attempt(state_root, verb, missing)
    assert_refused(out, state_root, cgroup_parent, code=1, says=(str(missing), "No such file or directory"))


def test_missing_config_json(bundle, state_root, cgroup_parent, verb):
    out = attempt(state_root, verb, bundle.path)
    assert_refused(out, state_root, cgroup_parent, code=1,
                   says=(str(bundle.path / "config.json"), "No such file or directory"))


@pytest.mark.parametrize("text", ["not json {", "", '{"ociVersion": "1.0.2",'])
def test_malformed_config_json(bundle, state_root, cgroup_parent, verb, text):
    (bundle.path / "config.json").write_text(text)
    out = attempt(state_root, verb, bundle.path)
    assert_refused(out, state_root, cgroup_parent, code=1, says=("config.json", "not valid JSON"))


def test_config_json_not_an_object(bundle, state_root, cgroup_parent, verb):
    (bundle.path / "config.json").write_text("[1, 2]")
    out = attempt(state_root, verb, bundle.path)
    assert_refused(out, state_root, cgroup_parent, code=1, says=("must be an object",))


@pytest.mark.parametrize("field, value, says", [
    ("args", "sh -c true", ("process.args", "list")),
    ("args", [], ("process.args",)),
    ("args", ["sh", 1], ("process.args",)),
    ("cwd", "relative", ("process.cwd", "absolute")),
    ("env", ["NOEQUALS"], ("process.env[0]",)),
])
def test_wrong_process_field(bundle, state_root, cgroup_parent, verb, field, value, says):
    b = bundle.write(["true"], cgroup="bad", edit=lambda c: c["process"].__setitem__(field, value))
    out = attempt(state_root, verb, b)
    assert_refused(out, state_root, cgroup_parent, code=1, says=says)


def test_missing_root(bundle, state_root, cgroup_parent, verb):
    b = bundle.write(["true"], cgroup="bad", edit=lambda c: c.pop("root"))
    out = attempt(state_root, verb, b)
    assert_refused(out, state_root, cgroup_parent, code=1, says=("root", "missing"))


def test_missing_rootfs(bundle, state_root, tmp_path, cgroup_parent, verb):
    missing = tmp_path / "no-such-rootfs"
    b = bundle.write(["true"], cgroup="bad", edit=lambda c: c["root"].__setitem__("path", str(missing)))
    out = attempt(state_root, verb, b)
    assert_refused(out, state_root, cgroup_parent, code=1, says=(f"rootfs {missing}", "does not exist"))


def test_rootfs_is_a_file(bundle, state_root, tmp_path, cgroup_parent, verb):
    file = tmp_path / "rootfs-file"
    file.write_text("")
    b = bundle.write(["true"], cgroup="bad", edit=lambda c: c["root"].__setitem__("path", str(file)))
    out = attempt(state_root, verb, b)
    assert_refused(out, state_root, cgroup_parent, code=1, says=(str(file), "not a directory"))


# --- namespaces --------------------------------------------------------------------------


def test_unknown_namespace_type(bundle, state_root, cgroup_parent, verb):
    b = bundle.write(["true"], cgroup="bad", edit=lambda c: c["linux"]["namespaces"].append({"type": "bogus"}))
    out = attempt(state_root, verb, b)
    assert_refused(out, state_root, cgroup_parent, code=1, says=("linux.namespaces[", "'bogus'"))


def test_namespace_path_that_does_not_exist(bundle, state_root, tmp_path, cgroup_parent, verb):
    missing = tmp_path / "no-such-ns"

    def edit(c: dict) -> None:
        for ns in c["linux"]["namespaces"]:
            if ns["type"] == "network":
                ns["path"] = str(missing)

    b = bundle.write(["true"], cgroup="bad", edit=edit)
    out = attempt(state_root, verb, b)
    assert_refused(out, state_root, cgroup_parent, code=1, says=(str(missing), "does not exist"))


# --- impossible limits ------------------------------------------------------------------------


@pytest.mark.parametrize("sections, says", [
    ({"memory": {"limit": -5}}, ("linux.resources.memory.limit", "-5")),
    ({"memory": {"limit": "64m"}}, ("linux.resources.memory.limit", "integer")),
    ({"memory": {"limit": 32 << 20, "swap": 16 << 20}}, ("linux.resources.memory.swap",)),
    ({"memory": {"swap": 64 << 20}}, ("linux.resources.memory.swap", "memory.limit")),
    ({"cpu": {"shares": 1}}, ("linux.resources.cpu.shares", "1")),
    ({"cpu": {"shares": 1 << 20}}, ("linux.resources.cpu.shares",)),
    ({"cpu": {"quota": 500}}, ("linux.resources.cpu.quota", "500")),
    ({"cpu": {"period": 10}}, ("linux.resources.cpu.period", "10")),
    ({"cpu": {"cpus": "3-1"}}, ("linux.resources.cpu.cpus",)),
    ({"pids": {"limit": "many"}}, ("linux.resources.pids.limit", "integer")),
    ({"pids": {"limit": 1.5}}, ("linux.resources.pids.limit", "integer")),
    ({"blockIO": {"weight": 5}}, ("linux.resources.blockIO.weight",)),
    ({"memory": 42}, ("linux.resources.memory", "object")),
], ids=lambda v: json.dumps(v) if isinstance(v, dict) else None)
def test_impossible_limit(bundle, state_root, cgroup_parent, verb, sections, says):
    b = bundle.write(["true"], cgroup="bad", edit=with_resources(**sections))
    out = attempt(state_root, verb, b)
    assert_refused(out, state_root, cgroup_parent, code=1, says=says)


def test_limit_the_kernel_refuses(bundle, state_root, cgroup_parent, verb):
    # Well-formed, so the cgroup is made; the kernel then refuses the CPUs: it must go again.
    b = bundle.write(["true"], cgroup="bad", edit=with_resources(cpu={"cpus": f"0-{os.cpu_count() + 1000}"}))
    out = attempt(state_root, verb, b)
    assert_refused(out, state_root, cgroup_parent, code=1, says=("cpuset.cpus",))


def test_memory_limit_too_low_for_the_init_names_the_cause(bundle, state_root, cgroup_parent, verb):
    b = bundle.write(["true"], cgroup="bad", edit=with_resources(memory={"limit": 4096}))
    out = attempt(state_root, verb, b)
    assert_refused(out, state_root, cgroup_parent, code=1, says=("OOM",))


# --- the command ----------------------------------------------------------------------------


@pytest.mark.parametrize("args, says", [
    (["no-such-command"], ('"no-such-command"', "not found")),
    (["/bin/no-such-command"], ("/bin/no-such-command", "no such file or directory")),
])
def test_missing_binary_exits_127(bundle, state_root, cgroup_parent, verb, args, says):
    b = bundle.write(args, cgroup="bad")
    out = attempt(state_root, verb, b)
    assert_refused(out, state_root, cgroup_parent, code=127, says=says)


def test_directory_as_binary_exits_126(bundle, state_root, cgroup_parent, verb):
    b = bundle.write(["/etc"], cgroup="bad")
    out = attempt(state_root, verb, b)
    assert_refused(out, state_root, cgroup_parent, code=126, says=('"/etc"', "permission denied"))


@pytest.mark.parametrize("args, path", [(["/root/tool"], None), (["tool"], "PATH=/root")],
                         ids=["by path", "in PATH"])
def test_non_executable_file_exits_126(bundle, state_root, tmp_path, cgroup_parent, verb, args, path):
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "tool").write_text("#!/bin/sh\necho ran\n")
    (tools / "tool").chmod(0o644)

    def edit(c: dict) -> None:
        c["mounts"].append({"destination": "/root", "type": "bind", "source": str(tools), "options": ["rbind", "ro"]})
        if path:
            c["process"]["env"] = [e for e in c["process"]["env"] if not e.startswith("PATH=")] + [path]

    b = bundle.write(args, cgroup="bad", edit=edit)
    out = attempt(state_root, verb, b)
    assert_refused(out, state_root, cgroup_parent, code=126, says=(f'"{args[0]}"', "permission denied"))


def test_cwd_that_cannot_exist(bundle, state_root, cgroup_parent, verb):
    # A missing cwd is created (as runc does), so pick one under a file: it can never be.
    b = bundle.write(["true"], cgroup="bad", edit=lambda c: c["process"].__setitem__("cwd", "/bin/busybox/x"))
    out = attempt(state_root, verb, b)
    assert_refused(out, state_root, cgroup_parent, code=1, says=("/bin/busybox/x", "Not a directory"))


def test_invalid_container_id(bundle, state_root, cgroup_parent, verb):
    b = bundle.write(["true"], cgroup="bad")
    out = attempt(state_root, verb, b, cid="no/slashes")
    assert_refused(out, state_root, cgroup_parent, code=1, says=("invalid container id", "no/slashes"),
                   cid="no")
