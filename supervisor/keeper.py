"""The keeper: a small process that holds each running container's pidfd and output across
daemon restarts, and writes their logs while no daemon does (``--live-restore``).

A container's init is the daemon's child, its stdout and stderr are pipes the
daemon reads (or a pty master). When the daemon dies, every read end of those
pipes would close with it: the container's next write would fail (EPIPE), its
terminal would hang up, and its exit status would go to whoever inherits it.
So the daemon hands a duplicate of each of those fds to the keeper, which
outlives it:

    daemon ──hold(id, pidfd, stdout, stderr | tty, stdin)──> keeper   (each run, after its start)
    daemon ──release(id)──────────────────────────────────> keeper   (the run ended)
    daemon dies or detaches (EOF)                            keeper copies output into the logs
    next daemon ──hello──> keeper stops copying, hands every held fd back; the daemon re-adopts

Rules:

1. One keeper per exec root, at ``<exec-root>/keeper.sock`` (0600). The daemon
   connects at start and starts a keeper when none answers; it serves one
   daemon at a time. A keeper with nothing held exits when its daemon leaves.
2. Nothing is lost while the daemon is away: a held pidfd keeps the
   process's exit status readable after anyone reaped it (``PIDFD_GET_INFO``,
   Linux 6.15), and held pipes are drained into the container's json-file log
   with its rotation settings (``logfile.copy_streams``).
3. Never two writers of one log: the keeper copies only while no daemon is
   connected, and a ``hello`` stops and joins its copiers before the reply;
   the daemon starts its own copiers only after that reply.
4. The keeper knows no state beyond its fds and what the daemon told it with
   them; the daemon's SQLite records stay the one truth.

Wire: one SOCK_SEQPACKET connection, JSON bodies, fds over SCM_RIGHTS (as the
spawner's; runtime/spawner.py):

    {"op": "hold", "id": ID, "pid": N, "fds": [names...], "log": LOG} + fds   -> {"ok": true}
    {"op": "release", "id": ID}                                                 -> {"ok": true}
    {"op": "hello"}  -> {"count": N}, then N x {"id", "pid", "fds": [names], "log", "copied", "dropped"} + fds

Names are "pidfd", "stdout", "stderr", "tty" (a pty master, logged as stdout)
and "stdin" (the write end the container reads). LOG is ``{"path", "max_size",
"max_files"}`` or null (the none driver: output is drained and dropped).

Rejected designs:

- A shim per container (containerd's): a Python process costs ~10 MB, a
  thousand containers would cost 10 GB. One keeper holds them all.
- Making the keeper the containers' parent: every exit would hop through it
  while the daemon runs. The daemon stays the parent and reaper; the keeper
  matters only when it is gone, and the host's init reaps then.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .logfile import JsonFileWriter, copy_streams

log = logging.getLogger("corral.keeper")

_MSG_MAX = 1 << 16
_MAX_FDS = 8                  # per message: a hold carries at most 4
STREAM_OF = {"stdout": "stdout", "stderr": "stderr", "tty": "stdout"}
# A keeper that does not answer in this long is treated as gone (hung, or serving another
# daemon on the same exec root: it serves one at a time).
CALL_TIMEOUT_S = 10.0


class KeeperError(Exception):
    """The keeper cannot be reached or started, or refused a request."""


@dataclass
class Held:
    """What the keeper holds for one container's run."""

    id: str
    pid: int
    fds: dict[str, int]
    log: dict | None = None
    copied: int = 0                # output bytes the keeper logged while the daemon was away
    dropped: int = 0               # log bytes it could not write (disk full)
    _copier: threading.Thread | None = field(default=None, repr=False)
    _stop_w: int = field(default=-1, repr=False)

    def close(self) -> None:
        fds, self.fds = self.fds, {}
        for fd in fds.values():
            os.close(fd)


# --- the daemon's side ------------------------------------------------------------------


class KeeperClient:
    """The daemon's connection to its keeper. Thread-safe; calls block (run them in a thread)."""

    def __init__(self, sock: socket.socket, path: Path) -> None:
        self._sock = sock
        self.path = path
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path, *, log_path: Path | None = None) -> KeeperClient:
        """Connect to the keeper at ``path``, starting one (detached, its own session) if none answers.

        Raises:
            KeeperError: no keeper could be started.
        """
        sock = _connect(path)
        if sock is None:
            _start(path, log_path)
            sock = _connect(path)
            if sock is None:
                raise KeeperError(f"the keeper at {path} started but does not answer")
        return cls(sock, path)

    def hello(self) -> list[Held]:
        """Everything the keeper holds, its copiers stopped (rule 3). The caller owns the fds."""
        with self._lock:
            self._send({"op": "hello"})
            count = self._recv()[0]["count"]
            out = []
            for _ in range(count):
                body, fds = self._recv()
                out.append(Held(body["id"], body["pid"], dict(zip(body["fds"], fds, strict=True)), body.get("log"),
                                copied=body.get("copied", 0), dropped=body.get("dropped", 0)))
            return out

    def hold(self, cid: str, pid: int, fds: dict[str, int], log_settings: dict | None) -> None:
        """Hand duplicates of ``fds`` (by name) to the keeper; ours stay ours."""
        self._call({"op": "hold", "id": cid, "pid": pid, "fds": list(fds), "log": log_settings}, list(fds.values()))

    def release(self, cid: str) -> None:
        self._call({"op": "release", "id": cid})

    def close(self) -> None:
        """Leave: the keeper copies the output of what it holds from now on, or exits holding nothing."""
        self._sock.close()

    def _call(self, body: dict, fds: list[int] | None = None) -> None:
        with self._lock:
            self._send(body, fds or [])
            reply, _ = self._recv()
        if "error" in reply:
            raise KeeperError(reply["error"])

    def _send(self, body: dict, fds: list[int] | None = None) -> None:
        try:
            socket.send_fds(self._sock, [json.dumps(body).encode()], fds or [])
        except OSError as exc:
            raise KeeperError(f"the keeper at {self.path} is gone: {exc.strerror or exc}") from None

    def _recv(self) -> tuple[dict, list[int]]:
        try:
            data, fds, _, _ = socket.recv_fds(self._sock, _MSG_MAX, _MAX_FDS)
        except OSError as exc:
            raise KeeperError(f"the keeper at {self.path} is gone: {exc.strerror or exc}") from None
        if not data:
            raise KeeperError(f"the keeper at {self.path} closed the connection")
        return json.loads(data), fds


def _connect(path: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    sock.settimeout(CALL_TIMEOUT_S)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    return sock


def _start(path: Path, log_path: Path | None) -> None:
    """Run ``python -m supervisor.keeper PATH`` in a session of its own; return once it listens.

    posix_spawn, not subprocess: no Popen object that would warn, or wait, on a child meant
    to outlive us (the daemon's orphan reaper reaps it if it ends first).
    """
    ready_r, ready_w = os.pipe()          # ready_w inherited by the keeper, ready_r not
    os.set_inheritable(ready_w, True)
    out = os.open(log_path or os.devnull, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.posix_spawn(sys.executable, [sys.executable, "-m", "supervisor.keeper", str(path), str(ready_w)],
                       os.environ, setsid=True, file_actions=[
                           (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                           (os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, out, 2)])
    except OSError as exc:
        os.close(ready_r)
        raise KeeperError(f"cannot start the keeper ({sys.executable}): {exc.strerror or exc}") from None
    finally:
        os.close(ready_w)
        os.close(out)
    try:
        with os.fdopen(ready_r, "rb") as ready:
            if ready.read() != b"ready":
                raise KeeperError(f"the keeper for {path} failed to start (see {log_path or 'its stderr'})")
    except OSError as exc:
        raise KeeperError(f"the keeper for {path}: {exc}") from None


# --- the keeper's side ------------------------------------------------------------------


class Keeper:
    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.held: dict[str, Held] = {}

    def run(self) -> None:
        """Serve daemons one at a time; copy output between them; exit holding nothing and alone."""
        while True:
            conn, _ = self.listener.accept()
            with conn:
                self._serve(conn)
            if not self.held:
                log.info("no daemon and nothing held: exiting")
                return
            log.info("the daemon left; copying the output of %d container(s)", len(self.held))
            for h in self.held.values():
                _start_copier(h)

    def _serve(self, conn: socket.socket) -> None:
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(conn, _MSG_MAX, _MAX_FDS)
            except OSError:
                return
            if not data:
                return
            try:
                body = json.loads(data)
                op = body["op"]
                if op == "hello":
                    try:
                        self._hello(conn)
                    except OSError:
                        return            # that daemon is gone already: copy on for the next one
                    continue
                if op == "hold":
                    names = body["fds"]
                    if len(names) != len(fds) or not set(names) <= {"pidfd", *STREAM_OF, "stdin"}:
                        raise ValueError(f"fds {names} do not match the {len(fds)} sent")
                    old = self.held.pop(body["id"], None)
                    if old is not None:
                        old.close()
                    self.held[body["id"]] = Held(body["id"], int(body["pid"]), dict(zip(names, fds, strict=True)),
                                                 body.get("log"))
                    fds = []
                elif op == "release":
                    h = self.held.pop(body["id"], None)
                    if h is not None:
                        h.close()
                else:
                    raise ValueError(f"unknown op {op!r}")
                reply = {"ok": True}
            except (ValueError, KeyError, TypeError) as exc:
                reply = {"error": f"keeper: bad request: {exc}"}
            finally:
                for fd in fds:
                    os.close(fd)
            try:
                socket.send_fds(conn, [json.dumps(reply).encode()], [])
            except OSError:
                return

    def _hello(self, conn: socket.socket) -> None:
        for h in self.held.values():
            _stop_copier(h)
        socket.send_fds(conn, [json.dumps({"count": len(self.held)}).encode()], [])
        for h in self.held.values():
            body = {"id": h.id, "pid": h.pid, "fds": list(h.fds), "log": h.log, "copied": h.copied,
                    "dropped": h.dropped}
            socket.send_fds(conn, [json.dumps(body).encode()], list(h.fds.values()))
            h.copied = h.dropped = 0


def _start_copier(h: Held) -> None:
    sources = {fd: STREAM_OF[name] for name, fd in h.fds.items() if name in STREAM_OF}
    if not sources:
        return
    stop_r, h._stop_w = os.pipe2(os.O_CLOEXEC)

    def count(_stream: str, data: bytes) -> None:
        h.copied += len(data)

    def copy() -> None:
        writer = None
        left = sources
        try:
            if h.log and h.log.get("path"):
                writer = JsonFileWriter(h.log["path"], max_size_bytes=int(h.log.get("max_size") or 0),
                                        max_files=int(h.log.get("max_files") or 1))
            left = copy_streams(sources, writer, stop_r, on_output=count)
        except Exception:           # noqa: BLE001 - logged; the fds stay held for the next daemon
            log.exception("copying the output of %s", h.id[:12])
        finally:
            os.close(stop_r)
            if writer is not None:
                h.dropped += writer.dropped_bytes
                writer.close()
            for name, fd in list(h.fds.items()):     # what reached EOF was closed by copy_streams
                if name in STREAM_OF and fd not in left:
                    del h.fds[name]

    h._copier = threading.Thread(target=copy, name=f"copy {h.id[:12]}", daemon=True)
    h._copier.start()


def _stop_copier(h: Held) -> None:
    if h._copier is None:
        return
    try:
        os.write(h._stop_w, b"x")
    except BrokenPipeError:
        pass                      # it ended on its own (EOF on every stream)
    h._copier.join()
    os.close(h._stop_w)
    h._copier, h._stop_w = None, -1


def main(argv: list[str]) -> int:
    """``python -m supervisor.keeper SOCKET-PATH READY-FD``: listen, say "ready" on READY-FD, serve."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s keeper[%(process)d] %(levelname)s: %(message)s")
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_IGN)
    path, ready = Path(argv[0]), int(argv[1])
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    path.unlink(missing_ok=True)            # the daemon found nobody answering there
    old = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    listener.listen(4)
    os.write(ready, b"ready")
    os.close(ready)
    started = time.monotonic()
    try:
        Keeper(listener).run()
    finally:
        path.unlink(missing_ok=True)
        log.info("stopped after %.0f s", time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
