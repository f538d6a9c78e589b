"""HostConfig.Init (--init): tini bound read-only as /sbin/docker-init, the command after "--"."""

from __future__ import annotations

import pytest

from protocols.container_config import InvalidContainerConfig, runtime_config

ARGS = dict(container_id="a" * 64, rootfs="/r", etc_files={}, privileged_caps=[], cgroups_path="c/a",
            cgroup_namespace=False)


def test_init_wraps_the_command_and_binds_tini_read_only() -> None:
    body = {"Image": "busybox", "Entrypoint": ["sh", "-c"], "Cmd": ["exit 0"], "HostConfig": {"Init": True}}
    config = runtime_config(body, {}, init_path="/usr/bin/tini-static", **ARGS)
    assert config["process"]["args"] == ["/sbin/docker-init", "--", "sh", "-c", "exit 0"]
    assert {"destination": "/sbin/docker-init", "type": "bind", "source": "/usr/bin/tini-static",
            "options": ["rbind", "ro"]} in config["mounts"]
    plain = runtime_config({**body, "HostConfig": {}}, {}, init_path="/usr/bin/tini-static", **ARGS)
    assert plain["process"]["args"] == ["sh", "-c", "exit 0"]
    assert not any(m["destination"] == "/sbin/docker-init" for m in plain["mounts"])


def test_init_without_a_binary_is_a_clear_error() -> None:
    with pytest.raises(InvalidContainerConfig, match="no init binary"):
        runtime_config({"Image": "b", "Cmd": ["true"], "HostConfig": {"Init": True}}, {}, **ARGS)
