"""The spawner: a single-threaded helper that clones container inits for a threaded daemon.

The daemon is multi-threaded (trio plus worker threads), and cloning a
threaded Python process is unsafe; so it starts this helper once, with
``Spawner.start()``, and asks it for every init. The helper clones with
CLONE_PARENT, so each init is the *daemon's* child: the daemon holds its pidfd,
reaps it with waitid(P_PIDFD) and signals it through the pidfd. A pre-imported
helper also keeps interpreter start-up off every container start.

Wire (one SOCK_SEQPACKET pair, one request at a time; JSON bodies because
runtime/ depends on no third-party codec; file descriptors ride SCM_RIGHTS):

    daemon -> spawner   {"spec": <config.json object>, "bundle": dir,
                         "cgroup": path|null, "cgroup_base": /proc/self/cgroup text|null}
                        + fds [stdin, stdout, stderr] (or none: the spawner's own)
    spawner -> daemon   {"pid": N} + fds [pidfd, sync]        (sync: EOF once exec'd)
                     or {"error": message, "exit_code": 1|126|127}

    daemon -> spawner   {"exec": {"process": <OCI process object>, "namespaces": [types],
                                  "cgroup": path|null, "cgroup_base": text|null}}
                        + fds [init pidfd, stdin, stdout, stderr]   (runtime/exec.py)
    spawner -> daemon   as above

The daemon creates the cgroup and applies its limits before asking; the
spawner only opens it to add the init. EOF on the socket ends the spawner.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading

from protocols.errors import ProtocolError
from protocols.runtime_spec import parse_process, parse_spec

from . import cgroups
from .errors import HostError, SpawnError
from .exec import spawn_exec
from .spawn import Child, spawn_init

_MSG_MAX = 1 << 20


class Spawner:
    """The daemon's handle on its spawner process. Thread-safe; calls block."""

    def __init__(self, sock: socket.socket, process: subprocess.Popen) -> None:
        self._sock = sock
        self._process = process
        self._lock = threading.Lock()

    @classmethod
    def start(cls) -> "Spawner":
        """Start the helper as our child (needed: CLONE_PARENT makes inits our children).

        subprocess execs at once (no Python between fork and exec), which is
        safe from a threaded process.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = subprocess.Popen([sys.executable, "-m", "runtime.spawner", str(theirs.fileno())],
                                       pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        return cls(ours, process)

    @property
    def pid(self) -> int:
        return self._process.pid

    def spawn(self, config: dict, *, bundle: str, cgroup: str | None = None, cgroup_base: str | None = None,
              stdio: tuple[int, int, int] | None = None) -> Child:
        """Start an init; returns once it is ready to exec (``wait_exec()`` tells the rest).

        Raises:
            SpawnError: the init could not be set up (message and exit code from it),
                or the spawner is gone.
        """
        request = {"spec": config, "bundle": bundle, "cgroup": cgroup, "cgroup_base": cgroup_base}
        return self._request(request, list(stdio) if stdio is not None else [])

    def exec(self, init_pidfd: int, process: dict, *, namespaces: list[str], cgroup: str | None = None,
             cgroup_base: str | None = None, stdio: tuple[int, int, int]) -> Child:
        """Start ``process`` (an OCI process object) in the running container of ``init_pidfd``.

        Returns once it is ready to exec (``wait_exec()`` tells the rest); see ``runtime.exec``.

        Raises:
            SpawnError: as ``spawn``.
        """
        request = {"exec": {"process": process, "namespaces": namespaces, "cgroup": cgroup,
                            "cgroup_base": cgroup_base}}
        return self._request(request, [init_pidfd, *stdio])

    def _request(self, request: dict, fds: list[int]) -> Child:
        body = json.dumps(request).encode()
        with self._lock:
            try:
                socket.send_fds(self._sock, [body], fds)
                reply, got, _, _ = socket.recv_fds(self._sock, _MSG_MAX, 2)
            except OSError as exc:
                raise SpawnError(f"the spawner (pid {self.pid}) is gone: {exc.strerror or exc}") from exc
        if not reply:
            raise SpawnError(f"the spawner (pid {self.pid}) closed its socket")
        answer = json.loads(reply)
        if "error" in answer:
            for fd in got:
                os.close(fd)
            raise SpawnError(answer["error"], exit_code=answer["exit_code"])
        pidfd, sync = got
        return Child(answer["pid"], pidfd, socket.socket(fileno=sync))

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the spawner (EOF on its socket) and reap it."""
        self._sock.close()
        try:
            self._process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def serve(sock: socket.socket) -> None:
    """The spawner's loop: one request, one reply, until EOF."""
    while True:
        message, fds, _, _ = socket.recv_fds(sock, _MSG_MAX, 4)
        if not message:
            return
        try:
            reply, reply_fds = _handle(message, fds)
            socket.send_fds(sock, [reply], reply_fds)
            for fd in reply_fds:
                os.close(fd)
        finally:
            for fd in fds:
                os.close(fd)


def _handle(message: bytes, fds: list[int]) -> tuple[bytes, list[int]]:
    try:
        request = json.loads(message)
        if "exec" in request:
            child = _handle_exec(request["exec"], fds)
        else:
            spec = parse_spec(request["spec"])
            cgroup = None
            if request.get("cgroup"):
                cgroup = cgroups.open_cgroup(request["cgroup"], mountinfo=cgroups.read_mountinfo(),
                                             self_cgroup=request.get("cgroup_base"))
            stdio = tuple(fds) if len(fds) == 3 else None
            child = spawn_init(spec, bundle=request["bundle"], cgroup=cgroup, clone_parent=True, stdio=stdio)
    except SpawnError as exc:
        return json.dumps({"error": str(exc), "exit_code": exc.exit_code}).encode(), []
    except (HostError, ProtocolError, ValueError, KeyError, TypeError) as exc:   # ValueError: bad JSON
        return json.dumps({"error": f"spawn request refused: {exc}", "exit_code": 1}).encode(), []
    except OSError as exc:         # one request's failure, never the spawner's end (every later start needs it)
        return json.dumps({"error": f"spawn failed: {exc}", "exit_code": 1}).encode(), []
    sync = child.detach_sync()
    return json.dumps({"pid": child.pid}).encode(), [child.pidfd, sync.detach()]


def _handle_exec(request: dict, fds: list[int]) -> Child:
    if len(fds) != 4:
        raise ValueError(f"an exec request carries 4 fds (init pidfd, stdin, stdout, stderr), got {len(fds)}")
    cgroup = None
    if request.get("cgroup"):
        cgroup = cgroups.open_cgroup(request["cgroup"], mountinfo=cgroups.read_mountinfo(),
                                     self_cgroup=request.get("cgroup_base"))
    return spawn_exec(fds[0], parse_process(request["process"]), namespaces=request["namespaces"],
                      cgroup=cgroup, clone_parent=True, stdio=(fds[1], fds[2], fds[3]))


def main(argv: list[str]) -> int:
    # The daemon decides when we stop (EOF); a Ctrl-C to its process group must not.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=int(argv[0]))
    serve(sock)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
