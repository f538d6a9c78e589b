"""Docker create body + image config -> OCI runtime config, with moby's defaults."""

from __future__ import annotations

import pytest

from protocols.container_config import (
    DOCKER_CAPABILITIES, InvalidContainerConfig, parse_bytes, parse_cpus, resolve_user, resources, runtime_config,
)
from protocols.runtime_spec import parse_spec

CID = "0123456789ab" + "c" * 52
IMAGE = {"Env": ["PATH=/bin", "LANG=C"], "Cmd": ["sh"], "WorkingDir": "/srv", "User": ""}


def build(create: dict, image: dict = IMAGE, **kw) -> dict:
    args = dict(container_id=CID, rootfs="/var/lib/corral/containers/x/rootfs",
                etc_files={"/etc/hostname": "/h", "/etc/hosts": "/hs"}, privileged_caps=["CAP_SYS_ADMIN", "CAP_KILL"],
                cgroups_path="corral/x", cgroup_namespace=False)
    args.update(kw)
    return runtime_config(create, image, **args)


def test_defaults_follow_moby() -> None:
    c = build({"Cmd": None, "HostConfig": {}})
    spec = parse_spec(c)               # what we build is a valid runtime config
    assert spec.process.args == ("sh",)
    assert spec.process.cwd == "/srv"
    assert spec.hostname == CID[:12]
    assert "HOSTNAME=" + CID[:12] in spec.process.env and "PATH=/bin" in spec.process.env and "LANG=C" in spec.process.env
    assert spec.process.capabilities.bounding == tuple(DOCKER_CAPABILITIES)
    assert spec.process.capabilities.ambient == () and not spec.process.no_new_privileges
    assert "/proc/kcore" in spec.masked_paths and "/proc/sys" in spec.readonly_paths
    assert [m.destination for m in spec.mounts][-2:] == ["/etc/hostname", "/etc/hosts"]
    assert spec.cgroups_path == "corral/x" and spec.namespace("cgroup") is None
    assert not spec.root.readonly


def test_entrypoint_and_cmd_rules() -> None:
    img = dict(IMAGE, Entrypoint=["/entry"], Cmd=["default"])
    assert build({"HostConfig": {}}, img)["process"]["args"] == ["/entry", "default"]
    assert build({"Cmd": ["x"], "HostConfig": {}}, img)["process"]["args"] == ["/entry", "x"]
    # --entrypoint clears the image's CMD unless a command is given too (docker run --entrypoint).
    assert build({"Entrypoint": ["/other"], "HostConfig": {}}, img)["process"]["args"] == ["/other"]
    with pytest.raises(InvalidContainerConfig, match="no command specified"):
        build({"HostConfig": {}}, {"Env": []})


def test_privileged_gets_what_the_daemon_holds_and_no_masks() -> None:
    fuse = {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}
    c = build({"Cmd": ["sh"], "HostConfig": {"Privileged": True}}, privileged_devices=[fuse])
    assert c["linux"]["devices"] == [fuse]
    assert "devices" not in build({"Cmd": ["sh"], "HostConfig": {}}, privileged_devices=[fuse])["linux"]
    assert c["process"]["capabilities"]["bounding"] == ["CAP_SYS_ADMIN", "CAP_KILL"]
    assert c["linux"]["maskedPaths"] == [] and c["linux"]["readonlyPaths"] == []
    sysfs = next(m for m in c["mounts"] if m["destination"] == "/sys")
    assert "ro" not in sysfs["options"]


def test_cap_add_and_drop() -> None:
    caps = build({"Cmd": ["sh"], "HostConfig": {"CapAdd": ["NET_ADMIN"], "CapDrop": ["MKNOD", "CAP_KILL"]}})
    bounding = caps["process"]["capabilities"]["bounding"]
    assert "CAP_NET_ADMIN" in bounding and "CAP_MKNOD" not in bounding and "CAP_KILL" not in bounding
    assert build({"Cmd": ["sh"], "HostConfig": {"CapDrop": ["ALL"]}})["process"]["capabilities"]["bounding"] == []


def test_resources_follow_moby() -> None:
    assert resources({"Memory": 64 << 20}) == {"memory": {"limit": 64 << 20, "swap": 128 << 20}}
    assert resources({"Memory": 64 << 20, "MemorySwap": -1})["memory"]["swap"] == -1
    assert resources({"NanoCpus": 500_000_000}) == {"cpu": {"quota": 50_000, "period": 100_000}}
    assert resources({"PidsLimit": 20, "CpuShares": 512, "CpusetCpus": "0"}) == {
        "pids": {"limit": 20}, "cpu": {"shares": 512, "cpus": "0"}}
    with pytest.raises(InvalidContainerConfig, match="MemorySwap: minimum memoryswap"):
        resources({"Memory": 64 << 20, "MemorySwap": 32 << 20})
    with pytest.raises(InvalidContainerConfig, match="set the Memory limit"):
        resources({"MemorySwap": 32 << 20})
    with pytest.raises(InvalidContainerConfig, match="Nano CPUs and CPU Period/Quota"):
        resources({"NanoCpus": 1, "CpuQuota": 1000})


def test_binds_tmpfs_and_read_only() -> None:
    c = build({"Cmd": ["sh"], "HostConfig": {"Binds": ["/srv/data:/data:ro", "/logs:/logs"],
                                             "Tmpfs": {"/run": "size=1m"}, "ReadonlyRootfs": True}})
    by_dest = {m["destination"]: m for m in c["mounts"]}
    assert by_dest["/data"]["options"] == ["rbind", "ro"] and by_dest["/logs"]["options"] == ["rbind", "rw"]
    assert "size=1m" in by_dest["/run"]["options"]
    assert c["root"]["readonly"]
    with pytest.raises(InvalidContainerConfig, match=r"HostConfig.Binds\[0\]: invalid bind"):
        build({"Cmd": ["sh"], "HostConfig": {"Binds": ["nocolon"]}})
    with pytest.raises(InvalidContainerConfig, match="invalid mode 'bogus'"):
        build({"Cmd": ["sh"], "HostConfig": {"Binds": ["/a:/b:bogus"]}})


PASSWD = "root:x:0:0:root:/root:/bin/sh\nweb:x:1000:100::/srv:/bin/sh\n"
GROUP = "root:x:0:\nusers:x:100:\nwheel:x:10:web\nlog:x:20:web,other\n"


@pytest.mark.parametrize(("user", "expected"), [
    ("", (0, 0, [])), ("0", (0, 0, [])), ("1000", (1000, 100, [10, 20])), ("web", (1000, 100, [10, 20])),
    ("web:wheel", (1000, 10, [20])), ("4242:4343", (4242, 4343, [])), ("root", (0, 0, [])),
])
def test_resolve_user(user: str, expected) -> None:
    assert resolve_user(user, PASSWD, GROUP) == expected


def test_unknown_user_is_named() -> None:
    with pytest.raises(InvalidContainerConfig, match="unable to find user nobody"):
        resolve_user("nobody", PASSWD, GROUP)
    with pytest.raises(InvalidContainerConfig, match="unable to find group staff"):
        resolve_user("web:staff", PASSWD, GROUP)


@pytest.mark.parametrize(("text", "value"), [("512m", 512 << 20), ("1g", 1 << 30), ("64k", 65536), ("100", 100),
                                             ("1.5g", 3 << 29), ("2MB", 2 << 20)])
def test_parse_bytes(text: str, value: int) -> None:
    assert parse_bytes(text) == value


def test_parse_errors() -> None:
    with pytest.raises(InvalidContainerConfig, match="memory: invalid size 'lots'"):
        parse_bytes("lots", field="memory")
    assert parse_cpus("0.5") == 500_000_000
    with pytest.raises(InvalidContainerConfig, match="cpus"):
        parse_cpus("-1")
