"""config.json parsing: everything `runc spec` writes, and every error names its field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protocols.errors import SpecError
from protocols.runtime_spec import parse_spec

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "oci" / "runc-spec.json"


def base() -> dict:
    return json.loads(FIXTURE.read_text())


def test_runc_spec_output_parses_completely() -> None:
    spec = parse_spec(FIXTURE.read_bytes())
    assert spec.oci_version == "1.0.2-dev"
    assert spec.root.path == "rootfs" and spec.root.readonly
    assert spec.hostname == "runc"
    assert spec.process.args == ("sh",)
    assert spec.process.terminal is True
    assert spec.process.capabilities.bounding == ("CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE")
    assert spec.process.capabilities.inheritable == ()
    assert spec.process.rlimits[0].type == "RLIMIT_NOFILE" and spec.process.rlimits[0].hard == 1024
    assert spec.process.no_new_privileges
    assert [m.destination for m in spec.mounts][:3] == ["/proc", "/dev", "/dev/pts"]
    assert spec.mounts[1].options == ("nosuid", "strictatime", "mode=755", "size=65536k")
    assert [ns.type for ns in spec.namespaces] == ["pid", "network", "ipc", "uts", "mount"]
    assert "/proc/kcore" in spec.masked_paths and "/proc/sys" in spec.readonly_paths
    assert spec.resources == {"devices": [{"allow": False, "access": "rwm"}]}


def test_optional_fields_are_read() -> None:
    doc = base()
    doc["process"]["user"] = {"uid": 1000, "gid": 100, "umask": 18, "additionalGids": [5, 6]}
    doc["process"]["oomScoreAdj"] = 500
    doc["linux"]["namespaces"].append({"type": "cgroup"})
    doc["linux"]["namespaces"][1] = {"type": "network", "path": "/var/run/netns/x"}
    doc["linux"]["cgroupsPath"] = "corral/web"
    doc["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    doc["linux"]["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438}]
    doc["linux"]["resources"]["memory"] = {"limit": 1 << 26}
    doc["annotations"] = {"a": "b"}
    spec = parse_spec(doc)
    assert spec.process.user.additional_gids == (5, 6) and spec.process.user.umask == 18
    assert spec.process.oom_score_adj == 500
    assert spec.namespace("network").path == "/var/run/netns/x"
    assert spec.namespace("cgroup") is not None and spec.namespace("user") is None
    assert spec.cgroups_path == "corral/web"
    assert spec.devices[0].minor == 229 and spec.devices[0].file_mode == 0o666
    assert spec.resources["memory"]["limit"] == 1 << 26
    assert spec.annotations == {"a": "b"}


def _edit(fn) -> dict:
    doc = base()
    fn(doc)
    return doc


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["process"].__setitem__("args", "sh"), "process.args: must be a list"),
    (lambda d: d["process"].__setitem__("args", []), "process.args: must be a non-empty list"),
    (lambda d: d["process"].__setitem__("cwd", "relative"), "process.cwd: must be an absolute path"),
    (lambda d: d["process"]["env"].append("NOEQUALS"), "process.env[2]"),
    (lambda d: d["process"]["user"].__setitem__("uid", -1), "process.user.uid: -1 is out of range"),
    (lambda d: d["process"]["capabilities"]["bounding"].append("KILL"), "process.capabilities.bounding: 'KILL'"),
    (lambda d: d["process"]["rlimits"][0].__setitem__("type", "RLIMIT_BOGUS"), "process.rlimits[0].type: unknown rlimit"),
    (lambda d: d["process"]["rlimits"][0].__setitem__("soft", 2048), "process.rlimits[0]: soft limit 2048 exceeds"),
    (lambda d: d.pop("root"), "root: required field is missing"),
    (lambda d: d.pop("ociVersion"), "ociVersion: required field is missing"),
    (lambda d: d["root"].__setitem__("readonly", "yes"), "root.readonly: must be true or false"),
    (lambda d: d["mounts"][0].__setitem__("destination", "proc"), "mounts[0].destination: must be an absolute path"),
    (lambda d: d["linux"]["namespaces"].append({"type": "bogus"}), "linux.namespaces[5].type: unknown namespace type 'bogus'"),
    (lambda d: d["linux"]["namespaces"].append({"type": "pid"}), "namespace 'pid' listed twice"),
    (lambda d: d["linux"]["maskedPaths"].append("relative"), "linux.maskedPaths[10]"),
    (lambda d: d["linux"].__setitem__("rootfsPropagation", "sideways"), "linux.rootfsPropagation"),
    (lambda d: d["linux"].__setitem__("devices", [{"path": "/etc/x", "type": "c"}]), "linux.devices[0].path: must be under /dev"),
    (lambda d: d.__setitem__("process", []), "process: must be an object"),
])
def test_errors_name_the_field(edit, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(_edit(edit))
    assert message in str(info.value)


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe", b"[]", b"null", b'"text"'])
def test_garbage_is_a_spec_error(raw: bytes) -> None:
    with pytest.raises(SpecError):
        parse_spec(raw)


def test_default_document_is_what_runc_spec_writes() -> None:
    from protocols.runtime_spec import default_spec_document

    assert default_spec_document() == base()
