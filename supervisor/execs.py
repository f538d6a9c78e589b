"""``docker exec`` in the daemon: exec instances, their process, their output and their events.

Rules:

1. An exec is created (checked, recorded, ``exec_create: CMD``), then started
   once (``exec_start: CMD``); its end is ``exec_die`` with ``exitCode``: Docker's
   events and attributes (``execID``).
2. The process belongs to a task, as a container's init does: ``start`` runs
   it in the Engine's nursery, so a client that goes away does not kill it
   (Docker's behaviour); a health probe runs it in the probe's own task, so the
   probe's timeout cancels it (and cancelling kills it, shielded: SIGKILL, reap).
3. Output goes to a sink; a sink whose reader left (a closed channel) turns
   into a drain, so the process never blocks on a reader that is gone.
4. A failure before exec is ``StartFailed`` with docker exec's exit codes:
   127 not found, 126 cannot be run.

The RPC stream (``exec.start``) carries ``{"stream": "stdout"|"stderr", "data":
bin}`` items, then ``{"ExitCode": n}``: stdin and a tty can join this shape
later as more item kinds, without a new method.

Rejected: pumping the output in the RPC request's task. Cancelling the
request would cut the process's output mid-way and leave it writing to a pipe
nobody reads, or kill it, which Docker does not do.
"""

from __future__ import annotations

import errno
import os
import secrets
import signal
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from protocols.container_config import InvalidContainerConfig, resolve_user
from runtime.errors import SpawnError
from runtime.spawn import Child

from .attach import ProcessInput, exec_stdio
from .errors import Conflict, InvalidRequest, NoSuchExec, StartFailed

if TYPE_CHECKING:
    from .engine import Engine, Entry

# (stream number 1 = stdout, 2 = stderr, data) -> awaited; the output of an exec.
Sink = Callable[[int, bytes], Awaitable[None]]
STREAM_NAMES = {1: "stdout", 2: "stderr"}
DRAIN_AFTER_EXIT_S = 2.0          # output still in the pipes after the exit; a grandchild holding them does not hold us
MAX_FINISHED = 256                # finished execs kept for inspect (Docker drops them with the container)
INIT_BINARIES = ("/usr/bin/tini-static", "/usr/bin/docker-init", "/usr/bin/tini")


@dataclass
class ExecInstance:
    """One exec: what it runs, and how it went."""

    id: str
    container_id: str
    body: dict[str, Any]
    process: dict[str, Any]                # the OCI process object the spawner gets
    started: bool = False
    running: bool = False
    exit_code: int | None = None
    pid: int = 0
    done: trio.Event = field(default_factory=trio.Event, repr=False)
    # -i/-t (attach.py): the daemon's end of its stdin/pty, set once spawned (or failed).
    input: ProcessInput | None = field(default=None, repr=False)
    spawned: trio.Event = field(default_factory=trio.Event, repr=False)

    @property
    def tty(self) -> bool:
        return bool(self.process.get("terminal"))

    @property
    def command(self) -> str:
        """Docker's event words: entrypoint and arguments joined by spaces."""
        return " ".join(self.process["args"])

    def inspect(self) -> dict[str, Any]:
        """GET /exec/{id}/json's shape."""
        args = self.process["args"]
        return {
            "ID": self.id, "Running": self.running, "ExitCode": self.exit_code, "Pid": self.pid,
            "ProcessConfig": {"tty": self.tty, "entrypoint": args[0], "arguments": args[1:],
                              "privileged": bool(self.body.get("Privileged")), "user": self.body.get("User") or ""},
            "OpenStdin": bool(self.body.get("AttachStdin")), "OpenStdout": bool(self.body.get("AttachStdout", True)),
            "OpenStderr": bool(self.body.get("AttachStderr", True)), "CanRemove": False,
            "ContainerID": self.container_id, "DetachKeys": "",
        }


def exec_process(config: dict[str, Any], body: dict[str, Any], *, passwd: str = "", group: str = "",
                 privileged_caps: list[str] = ()) -> dict[str, Any]:
    """The OCI process of an exec: the container's process with the exec body's changes. Pure.

    Args:
        config: the container's OCI runtime config.
        body: Docker's exec create body (Cmd, Env, User, WorkingDir, Privileged).
        passwd, group: the container's /etc/passwd and /etc/group, for ``User`` names.
        privileged_caps: what ``Privileged`` grants (every capability the daemon holds).

    Raises:
        InvalidRequest: no command, a relative working directory, an unknown user.
    """
    cmd = body.get("Cmd")
    if isinstance(cmd, str):
        cmd = [cmd]
    if not cmd or not isinstance(cmd, list) or not all(isinstance(a, str) for a in cmd) or not cmd[0]:
        raise InvalidRequest("no exec command specified")
    base = config["process"]
    env = _merge_env(base.get("env") or [], body.get("Env") or [])
    cwd = body.get("WorkingDir") or base.get("cwd") or "/"
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise InvalidRequest(f"the working directory '{cwd}' is invalid, it needs to be an absolute path")
    user = dict(base.get("user") or {"uid": 0, "gid": 0})
    if body.get("User"):
        try:
            uid, gid, extra = resolve_user(str(body["User"]), passwd, group)
        except InvalidContainerConfig as exc:
            raise InvalidRequest(str(exc).removeprefix("user: ")) from None
        user = {"uid": uid, "gid": gid, **({"additionalGids": extra} if extra else {})}
    caps = base.get("capabilities")
    if body.get("Privileged"):
        caps = {k: list(privileged_caps) for k in ("bounding", "effective", "permitted")}
    tty = bool(body.get("Tty"))
    if tty and not any(item.startswith("TERM=") for item in env):
        env.append("TERM=xterm")                        # moby's exec does the same
    process: dict[str, Any] = {"terminal": tty, "args": list(cmd), "env": env, "cwd": cwd, "user": user,
                               "noNewPrivileges": bool(base.get("noNewPrivileges", False))}
    size = body.get("ConsoleSize")
    if tty and isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):
        process["consoleSize"] = {"height": size[0], "width": size[1]}
    if caps is not None:
        process["capabilities"] = caps
    return process


def _merge_env(base: list[str], extra: list[str]) -> list[str]:
    """Docker's ReplaceOrAppendEnvValues: a later KEY=value replaces an earlier KEY."""
    if not isinstance(extra, list) or not all(isinstance(e, str) for e in extra):
        raise InvalidRequest("Env: must be a list of 'KEY=value' strings")
    env: dict[str, str] = {}
    for item in [*base, *extra]:
        key, sep, value = item.partition("=")
        if not key:
            raise InvalidRequest(f"Env: invalid entry {item!r}")
        if sep:
            env[key] = value
    return [f"{k}={v}" for k, v in env.items()]


def find_init_binary() -> str | None:
    """The host's static tini (Debian ``tini``), bind-mounted as /sbin/docker-init by ``--init``."""
    return next((p for p in INIT_BINARIES if os.access(p, os.X_OK)), None)


def _read_in_root(root: Path, rel: str) -> str:
    """A file of the container's root, "" when missing or when it leads outside the root (worker thread)."""
    path = root / rel
    try:
        real = Path(os.path.realpath(path))
        if not real.is_relative_to(root.resolve()):
            return ""
        return real.read_text(errors="replace")
    except OSError:
        return ""


class Execs:
    """The Engine's exec instances. The Engine calls in; nothing else holds them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._execs: OrderedDict[str, ExecInstance] = OrderedDict()
        self._children: dict[str, Child] = {}        # exec id -> its running process (probes too)
        self._pipes: dict[str, list[tuple[int, int]]] = {}   # exec id -> (read end, stream number) not yet pumped

    def pids(self) -> set[int]:
        """PIDs of the exec'd processes we wait on: the orphan reaper must leave them alone."""
        return {c.pid for c in self._children.values()}

    def _get(self, exec_id: str) -> ExecInstance:
        x = self._execs.get(exec_id)
        if x is None:
            raise NoSuchExec(f"no such exec instance: {exec_id}")
        return x

    def _running_entry(self, ref: str) -> Entry:
        e = self.engine._get(ref)
        if not e.running or e.sup.child is None:
            raise Conflict(f"container {e.sup.id} is not running")
        if e.paused:
            raise Conflict(f"container {e.sup.id} is paused, unpause the container before exec")
        return e

    async def create(self, ref: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST /containers/{id}/exec: {"Id": ...}.

        Raises:
            NoSuchContainer; Conflict: not running, or paused; InvalidRequest: a bad body.
        """
        if not isinstance(body, dict):
            raise InvalidRequest("exec body must be an object")
        e = self._running_entry(ref)
        x = await self._instance(e, body)
        self._execs[x.id] = x
        self._forget_finished()
        await self.engine._publish(f"exec_create: {x.command}", e.sup, {"execID": x.id})
        return {"Id": x.id}

    async def _instance(self, e: Entry, body: dict[str, Any]) -> ExecInstance:
        passwd = group = ""
        if body.get("User"):
            root = e.dir / "rootfs"
            passwd, group = await trio.to_thread.run_sync(
                lambda: (_read_in_root(root, "etc/passwd"), _read_in_root(root, "etc/group")))
        process = exec_process(e.sup.config, body, passwd=passwd, group=group,
                               privileged_caps=self.engine.privileged_caps)
        return ExecInstance(secrets.token_hex(32), e.sup.id, dict(body), process)

    def _forget_finished(self) -> None:
        finished = [i for i, x in self._execs.items() if x.done.is_set()]
        for exec_id in finished[:max(0, len(finished) - MAX_FINISHED)]:
            del self._execs[exec_id]

    def inspect(self, exec_id: str) -> dict[str, Any]:
        return self._get(exec_id).inspect()

    async def start(self, exec_id: str, *, detach: bool = False,
                    output: trio.MemorySendChannel | None = None) -> None:
        """POST /exec/{id}/start: returns once the process runs (its errors come from here).

        Args:
            detach: its output goes nowhere (/dev/null), as Docker's detached exec.
            output: a channel that gets ``(stream number, bytes)`` and is closed
                once the process ended and its pipes are drained (not detached).

        Raises:
            NoSuchExec; Conflict: started before, or its container is not running
            or paused; StartFailed: exit_code 126/127 when the command is the cause.
        """
        x = self._get(exec_id)
        if x.started:
            raise Conflict(f"exec {exec_id} has already been started")
        e = self._running_entry(x.container_id)
        x.started = True
        sink = None if detach or output is None else _channel_sink(output)
        try:
            await self.engine._nursery.start(self._run_task, x, e, sink, output)
        except BaseException:
            if output is not None:
                output.close()
            raise

    async def _run_task(self, x: ExecInstance, e: Entry, sink: Sink | None, output, *,
                        task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self.run(x, e, sink, task_status=task_status)
        finally:
            if output is not None:
                output.close()

    async def run_probe(self, e: Entry, cmd: list[str], *, max_output: int) -> tuple[int, str]:
        """A health probe: run ``cmd`` in ``e`` and return (exit code, output kept to ``max_output`` bytes).

        Cancelling it (the probe's timeout) kills the process. Not kept for inspect.

        Raises:
            Conflict: the container is not running or paused; StartFailed: 126/127.
        """
        x = await self._instance(self._running_entry(e.sup.id), {"Cmd": cmd})
        kept = bytearray()

        async def keep(_stream: int, data: bytes) -> None:
            kept.extend(data[:max(0, max_output - len(kept))])
        x.started = True
        await self.run(x, e, keep)
        return x.exit_code if x.exit_code is not None else -1, kept.decode(errors="replace")

    async def run(self, x: ExecInstance, e: Entry, sink: Sink | None, *,
                  task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run the exec's process to its end: spawn, ``exec_start``, output, exit, ``exec_die``."""
        child = await self._spawn(x, e, sink)
        reaped = False
        try:
            with trio.CancelScope(shield=True):
                try:
                    await self.engine.host.wait_exec(child)
                except SpawnError as exc:
                    reaped = True               # wait_exec reaped it (runtime.spawn.Child)
                    x.exit_code = exc.exit_code
                    raise StartFailed(str(exc), exit_code=exc.exit_code) from None
            x.running, x.pid = True, child.pid
            await self.engine._publish(f"exec_start: {x.command}", e.sup, {"execID": x.id})
            task_status.started()
            async with trio.open_nursery() as nursery:
                for fd, number in self._pipes.pop(x.id, ()):
                    nursery.start_soon(_pump, fd, number, sink)
                status = await self.engine.host.wait_exit(child)
                reaped = True
                nursery.cancel_scope.deadline = trio.current_time() + DRAIN_AFTER_EXIT_S
            await self._died(x, e, status.exit_code)
        except BaseException:
            # Whatever ended us (a probe's timeout, a client gone, a cancelled publish):
            # the process is killed and reaped here. It is our child (CLONE_PARENT) and a
            # zombie left in the container's PID namespace keeps its init from ever
            # finishing its exit, so the container could never be stopped.
            if not reaped:
                with trio.CancelScope(shield=True):
                    child.send_signal(signal.SIGKILL)
                    status = await self.engine.host.wait_exit(child)
                    await self._died(x, e, status.exit_code)
            raise
        finally:
            for fd, _ in self._pipes.pop(x.id, ()):
                os.close(fd)
            self._children.pop(x.id, None)
            child.close()
            if x.input is not None:
                x.input.close()
            x.running = False
            x.done.set()

    async def _died(self, x: ExecInstance, e: Entry, code: int) -> None:
        x.exit_code = code
        x.running = False
        with trio.CancelScope(shield=True):
            await self.engine._publish("exec_die", e.sup, {"execID": x.id, "exitCode": str(code)})

    async def _spawn(self, x: ExecInstance, e: Entry, sink: Sink | None) -> Child:
        """Clone the process through the spawner; its stdout/stderr are pipes (or a pty) when there is a sink."""
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        ours: list[tuple[int, int]] = []
        theirs: list[int] = []
        try:
            stdio = (null, null, null)
            if sink is not None:
                size = x.process.get("consoleSize") or {}
                x.input, ours, stdio, theirs = exec_stdio(
                    tty=x.tty, stdin=bool(x.body.get("AttachStdin")), rows=size.get("height", 0),
                    cols=size.get("width", 0), init=e.sup.child)
            init = e.sup.child
            if init is None:
                raise Conflict(f"container {e.sup.id} is not running")
            # Our own copy: the container's task closes its pidfd when the init exits.
            init_pidfd = os.dup(init.pidfd)
            try:
                child = await self.engine.host.exec(
                    init_pidfd, x.process, namespaces=[ns["type"] for ns in e.sup.config["linux"]["namespaces"]],
                    cgroup=e.sup.cgroup, stdio=stdio)
            except SpawnError as exc:
                x.exit_code = exc.exit_code
                raise StartFailed(str(exc), exit_code=exc.exit_code) from None
            finally:
                os.close(init_pidfd)
        except BaseException:
            for fd, _ in ours:
                os.close(fd)
            if x.input is not None:
                x.input.close()
            x.done.set()
            x.spawned.set()
            raise
        finally:
            os.close(null)
            for fd in theirs:
                os.close(fd)
        # No checkpoint since the spawner answered: the reaper cannot have seen it.
        self._children[x.id] = child
        self._pipes[x.id] = ours
        x.spawned.set()
        return child

    async def input_of(self, exec_id: str, *, need_stdin: bool = True) -> ProcessInput:
        """The exec's stdin/terminal once it is spawned (``exec.stdin``/``exec.resize`` may come first).

        Raises:
            NoSuchExec; Conflict: no stdin (not ``-i``) or no terminal, or it has finished.
        """
        x = self._get(exec_id)
        if need_stdin and not x.body.get("AttachStdin"):
            raise Conflict(f"exec {exec_id} was created without -i (AttachStdin): it has no stdin")
        if not x.tty and not need_stdin:
            raise InvalidRequest(f"exec {exec_id} has no terminal (it was created without -t)")
        await x.spawned.wait()
        if x.input is None or x.input.closed and x.done.is_set():
            raise Conflict(f"exec {exec_id} is not running")
        return x.input


def _channel_sink(channel: trio.MemorySendChannel) -> Sink:
    """A sink into ``channel``; once its reader is gone, output is dropped (rule 3)."""
    gone = False

    async def sink(number: int, data: bytes) -> None:
        nonlocal gone
        if gone:
            return
        try:
            await channel.send((number, data))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            gone = True
    return sink


async def _pump(fd: int, number: int, sink: Sink | None) -> None:
    async with trio.lowlevel.FdStream(fd) as stream:       # owns fd from here (non-blocking)
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError as exc:
                if isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.EIO:
                    return                 # a pty master once the slave side is all closed: EOF (pty(7))
                raise
            if not data:
                return
            if sink is not None:
                await sink(number, data)


async def stream_exec_output(engine: Engine, exec_id: str, *, detach: bool):
    """The ``exec.start`` RPC stream: output items, then ``{"ExitCode": n}`` (detached: nothing)."""
    if detach:
        await engine.exec_start(exec_id, detach=True)
        return
    send, receive = trio.open_memory_channel(16)
    async with receive:
        await engine.exec_start(exec_id, output=send)
        async for number, data in receive:
            yield {"stream": STREAM_NAMES[number], "data": data}
    yield {"ExitCode": engine.exec_inspect(exec_id)["ExitCode"]}
