"""The exec body -> OCI process (pure), the namespaces an exec joins, the CLI's exec flags."""

from __future__ import annotations

import pytest

from runtime import _syscalls
from runtime.exec import join_flags
from supervisor.commands import _parser, exec_body
from supervisor.errors import InvalidRequest
from supervisor.execs import exec_process

CONFIG = {"process": {"args": ["sleep", "1"], "env": ["PATH=/bin", "A=1"], "cwd": "/srv",
                      "user": {"uid": 5, "gid": 6}, "noNewPrivileges": True,
                      "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]}}}
PASSWD = "root:x:0:0::/root:/bin/sh\napp:x:1500:1600::/home/app:/bin/sh\n"
GROUP = "app:x:1600:\nops:x:1700:app\n"


def test_exec_inherits_the_containers_process_and_applies_the_body() -> None:
    p = exec_process(CONFIG, {"Cmd": ["id"]})
    assert p == {"terminal": False, "args": ["id"], "env": ["PATH=/bin", "A=1"], "cwd": "/srv",
                 "user": {"uid": 5, "gid": 6}, "noNewPrivileges": True, "capabilities": CONFIG["process"]["capabilities"]}
    p = exec_process(CONFIG, {"Cmd": ["id"], "Env": ["A=2", "B=3"], "WorkingDir": "/tmp", "User": "app"},
                     passwd=PASSWD, group=GROUP)
    assert p["env"] == ["PATH=/bin", "A=2", "B=3"] and p["cwd"] == "/tmp"
    assert p["user"] == {"uid": 1500, "gid": 1600, "additionalGids": [1700]}
    assert exec_process(CONFIG, {"Cmd": ["id"], "User": "7:8"})["user"] == {"uid": 7, "gid": 8}
    privileged = exec_process(CONFIG, {"Cmd": ["id"], "Privileged": True}, privileged_caps=["CAP_SYS_ADMIN"])
    assert privileged["capabilities"]["effective"] == ["CAP_SYS_ADMIN"]


@pytest.mark.parametrize(("body", "message"), [
    ({}, "no exec command specified"), ({"Cmd": []}, "no exec command specified"),
    ({"Cmd": ["x"], "WorkingDir": "tmp"}, "needs to be an absolute path"),
    ({"Cmd": ["x"], "User": "ghost"}, "unable to find user ghost"),
    ({"Cmd": ["x"], "Env": ["=x"]}, "invalid entry"),
])
def test_bad_exec_bodies_are_named(body: dict, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        exec_process(CONFIG, body, passwd=PASSWD, group=GROUP)


def test_join_flags_leave_out_the_pid_namespace() -> None:
    flags = join_flags(["pid", "network", "ipc", "uts", "mount"])
    assert flags == _syscalls.CLONE_NEWNET | _syscalls.CLONE_NEWIPC | _syscalls.CLONE_NEWUTS | _syscalls.CLONE_NEWNS
    assert join_flags(["cgroup"]) == _syscalls.CLONE_NEWCGROUP
    with pytest.raises(ValueError, match="unknown namespace"):
        join_flags(["nope"])


def test_exec_flags_become_dockers_exec_body(tmp_path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("# c\nX=1\n")
    args = _parser().parse_args(["exec", "-d", "-u", "app", "-w", "/tmp", "-e", "A=1", "--env-file", str(env_file),
                                 "web", "sh", "-c", "echo hi"])
    assert exec_body(args) == {"User": "app", "Privileged": False, "Tty": False, "AttachStdin": False,
                               "AttachStdout": False, "AttachStderr": False, "Detach": True, "DetachKeys": "",
                               "Env": ["A=1", "X=1"], "WorkingDir": "/tmp", "Cmd": ["sh", "-c", "echo hi"]}
    args = _parser().parse_args(["exec", "web", "ls", "-l"])
    assert exec_body(args)["Cmd"] == ["ls", "-l"] and exec_body(args)["AttachStdout"] is True
