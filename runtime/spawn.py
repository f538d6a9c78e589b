"""Starting a container's init: clone into namespaces, set up, wait for "go", exec.

The parent and the init talk over a SOCK_SEQPACKET pair (one message each):

    parent                                  init (PID 1 of a new PID namespace)
    clone(CLONE_NEW*) ───────────────────>  blocks in recv()
      (clone3 into the v2 cgroup if any)
    pidfd_open(pid)
    send "go" ───────────────────────────>  joins its cgroup (cgroup.join_self) before
                                            anything else; setns/unshare(cgroup), rootfs, pivot_root,
                                            hostname, rlimits, user, capabilities,
                                            looks the binary up
                        <────────────────── "ready"  or  "error" {message, exit_code}
                                            [create: blocks opening exec.fifo until start]
                                            execve(); the init's end is close-on-exec,
    recv() == b""  <─────────────────────── so EOF means exec succeeded,
                        <────────────────── or "error" when execve itself failed

Rejected designs:

- os.fork() + unshare(CLONE_NEWPID) + a second fork: the init would be a
  grandchild, so the caller could not wait on it without becoming a
  subreaper, and every start pays two forks. A raw clone(2) puts the init
  straight into its namespaces as the caller's child (or, with CLONE_PARENT,
  as the child of the spawner's parent: the daemon).
- Joining the cgroup with CLONE_NEWCGROUP at clone time: the namespace root
  would be the caller's cgroup. The parent adds the init to its cgroup first,
  and the init unshares its cgroup namespace after "go" (runc does the same).

Only single-threaded processes may call ``spawn_init`` (see ``_syscalls.clone``).
"""

from __future__ import annotations

import errno
import json
import os
import resource
import select
import signal
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from protocols.runtime_spec import Process, Spec

from . import _syscalls, caps, net, rootfs, terminal
from .errors import HostError, SpawnError

NAMESPACE_FLAGS = {
    "pid": _syscalls.CLONE_NEWPID, "network": _syscalls.CLONE_NEWNET, "mount": _syscalls.CLONE_NEWNS,
    "ipc": _syscalls.CLONE_NEWIPC, "uts": _syscalls.CLONE_NEWUTS, "cgroup": _syscalls.CLONE_NEWCGROUP,
    "user": _syscalls.CLONE_NEWUSER, "time": _syscalls.CLONE_NEWTIME,
}
_MSG_MAX = 1 << 16
_RLIMITS = {name: getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_")}


@dataclass(frozen=True)
class ExitStatus:
    """How a process ended: ``code`` when it exited, ``signal`` when a signal killed it."""

    code: int | None = None
    signal: int | None = None
    core_dumped: bool = False

    @property
    def unknown(self) -> bool:
        """Neither: the process ended while nobody who could tell was watching."""
        return self.code is None and self.signal is None

    @property
    def exit_code(self) -> int:
        """The shell's convention: the code, or 128 + the signal number; 255 when unknown (moby's)."""
        if self.unknown:
            return 255
        return self.code if self.signal is None else 128 + self.signal

    def __str__(self) -> str:
        if self.unknown:
            return "exit status unknown"
        if self.signal is not None:
            return f"killed by signal {signal.Signals(self.signal).name}" + (" (core dumped)" if self.core_dumped else "")
        return f"exit status {self.code}"


def exit_status_of_wait(status: int) -> ExitStatus:
    """From a waitpid(2)-style status word (what PIDFD_GET_INFO reports)."""
    if os.WIFSIGNALED(status):
        return ExitStatus(signal=os.WTERMSIG(status), core_dumped=os.WCOREDUMP(status))
    return ExitStatus(code=os.WEXITSTATUS(status))


def exit_status_of(result: os.waitid_result) -> ExitStatus:
    if result.si_code == os.CLD_EXITED:
        return ExitStatus(code=result.si_status)
    return ExitStatus(signal=result.si_status, core_dumped=result.si_code == os.CLD_DUMPED)


class Child:
    """A started init: its PID, a pidfd for it, and (until exec is confirmed) the sync socket.

    Signals go through the pidfd and the exit status comes from
    ``waitid(P_PIDFD)``, so neither can reach a process that reused the PID.

    An *adopted* child (``adopted=True``: a container a previous daemon started,
    re-adopted after a restart) is not ours to reap: whoever inherited it reaps
    it, and its status is read from the pidfd afterwards (``PIDFD_GET_INFO``,
    Linux 6.15+). On older kernels that status is unknown (``ExitStatus()``).
    """

    def __init__(self, pid: int, pidfd: int, sync: socket.socket | None = None, *, adopted: bool = False) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self._sync = sync
        self.adopted = adopted

    def send_signal(self, signum: int) -> None:
        """Signal the init; a no-op once it has exited (pidfd_send_signal ESRCH)."""
        try:
            signal.pidfd_send_signal(self.pidfd, signum)
        except ProcessLookupError:
            pass

    def wait_exec(self) -> None:
        """Block until the init has exec'd its command.

        Raises:
            SpawnError: execve failed; the init has exited and been reaped.
        """
        if self._sync is None:
            return
        try:
            message = self._sync.recv(_MSG_MAX)
        except ConnectionResetError:
            message = b""         # the init died before exec: its status says how
        finally:
            self._sync.close()
            self._sync = None
        if message:
            error = _decode_error(message)
            self.wait()
            raise error

    def detach_sync(self) -> socket.socket | None:
        """Hand the sync socket (EOF = exec done) to the caller, who now owns it."""
        sync, self._sync = self._sync, None
        return sync

    def poll(self) -> ExitStatus | None:
        """The exit status if the init has exited (and reap it), else None. Never blocks.

        Adopted: None also while it has exited but waits, a zombie, for its reaper.
        """
        if self.adopted:
            return reaped_status(self.pidfd)
        result = os.waitid(os.P_PIDFD, self.pidfd, os.WEXITED | os.WNOHANG)
        return exit_status_of(result) if result is not None else None

    def wait(self) -> ExitStatus:
        """Block until the init exits, reap it and return how it ended."""
        while True:
            try:
                return exit_status_of(os.waitid(os.P_PIDFD, self.pidfd, os.WEXITED))
            except InterruptedError:   # pragma: no cover - PEP 475 retries for us
                continue

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1


def read_start_time(pid: int, *, proc: Path = Path("/proc")) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks after boot), or None if PID is gone.

    With the PID, it names one process for good: a recycled PID has another start time.
    """
    try:
        raw = (proc / str(pid) / "stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    return int(raw[raw.rindex(b")") + 2:].split()[19])


def open_pidfd(pid: int, start_time: int) -> int | None:
    """A pidfd for PID if it is still the process that started at ``start_time``.

    The start time is checked after the pidfd is open, so the pidfd can only
    refer to the process that was checked. None when that process is gone.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    if read_start_time(pid) != start_time:
        os.close(pidfd)
        return None
    return pidfd


def reaped_status(pidfd: int) -> ExitStatus | None:
    """How the process behind ``pidfd`` ended, once someone reaped it; None before.

    ``ExitStatus()`` (unknown, exit code 255) where the kernel cannot say (before 6.15)
    and the process is gone.
    """
    try:
        status = _syscalls.pidfd_exit_info(pidfd)
    except OSError:
        return ExitStatus() if process_exited(pidfd) else None
    return exit_status_of_wait(status) if status is not None else None


def process_exited(pidfd: int) -> bool:
    """Whether the process behind ``pidfd`` has exited (a pidfd polls readable then)."""
    return bool(select.select([pidfd], [], [], 0)[0])


def clone_flags(spec: Spec) -> int:
    """The CLONE_NEW* flags for the namespaces the init creates at clone time.

    Namespaces with a ``path`` are joined instead; the cgroup namespace is
    unshared by the init after it joined its cgroup (module docstring).
    """
    flags = 0
    for ns in spec.namespaces:
        if ns.path is None and ns.type != "cgroup":
            flags |= NAMESPACE_FLAGS[ns.type]
    return flags


def check_spec(spec: Spec, rootfs_path: str) -> None:
    """What the runtime refuses before it creates anything.

    Raises:
        SpawnError: the message names the cause.
    """
    if spec.process is None:
        raise SpawnError("config.json has no process to run")
    if not os.path.isdir(rootfs_path):
        raise SpawnError(f"rootfs {rootfs_path} does not exist or is not a directory")
    mount_ns = spec.namespace("mount")
    if mount_ns is None or mount_ns.path is not None:
        raise SpawnError("a new mount namespace is required (linux.namespaces has no 'mount' without a path)")
    for ns in spec.namespaces:
        if ns.type in ("user", "time"):
            raise SpawnError(f"{ns.type} namespaces are not supported by this runtime yet")
        if ns.path is not None and not os.path.exists(ns.path):
            raise SpawnError(f"namespace path {ns.path} for {ns.type} does not exist")
    if spec.hostname and (spec.namespace("uts") is None or spec.namespace("uts").path is not None):
        raise SpawnError("unable to set the hostname without a private UTS namespace")
    for rl in spec.process.rlimits:
        if rl.type not in _RLIMITS:
            raise SpawnError(f"rlimit {rl.type} is not known to this system")
    try:
        last = caps.last_cap()
        if spec.process.capabilities is not None:
            for name in _all_caps(spec.process):
                caps.mask_of((name,), last=last)
    except ValueError as exc:
        raise SpawnError(str(exc)) from None


def spawn_init(spec: Spec, *, bundle: str, cgroup=None, exec_fifo: str | None = None,
               clone_parent: bool = False, stdio: tuple[int, int, int] | None = None) -> Child:
    """Start the container's init and return once it is ready to exec.

    Args:
        spec: the validated spec.
        bundle: the bundle directory; ``spec.root.path`` and relative bind
            sources are taken from it.
        cgroup: a created ``runtime.cgroups.Cgroup`` to put the init in before
            it runs any of its own code, or None.
        exec_fifo: a FIFO the init opens for writing, after set-up and before
            exec: ``create`` leaves the init blocked there until ``start`` reads it.
        clone_parent: make the init a child of our parent (CLONE_PARENT): the
            spawner uses it so the daemon is the init's parent. We can then
            not reap it; on a failed start it is killed and left to the parent.
        stdio: file descriptors to become the init's 0, 1 and 2; None keeps ours.
            With ``process.terminal`` the first is a pty slave, and the third
            may be the devpts instance it belongs to (a directory: ``terminal.open_devpts``):
            the init mounts that at /dev/pts, and its 1 and 2 are the terminal too.

    Returns:
        The ``Child``. Without ``exec_fifo``, call ``wait_exec()`` to learn whether exec succeeded.

    Raises:
        SpawnError: set-up failed; the message says what, and ``exit_code`` is
            127 (not found) or 126 (not executable) as runc's. Nothing is left running.
    """
    root = os.path.join(bundle, spec.root.path)
    check_spec(spec, root)
    fifo_fd = os.open(exec_fifo, os.O_PATH | os.O_CLOEXEC) if exec_fifo else None
    sources = cgroup.mount_sources() if cgroup is not None else []
    fresh = bool(spec.namespace("cgroup")) and len(sources) == 1 and sources[0][0] == ""
    pid_ns = spec.namespace("pid")
    devpts = None
    on_terminal = spec.process.terminal and stdio is not None      # stdio[0] is its pty slave
    if on_terminal and stat.S_ISDIR(os.fstat(stdio[2]).st_mode):
        devpts, stdio = stdio[2], (stdio[0], stdio[0], stdio[0])     # runtime/terminal.py rule 1
    try:
        return start_child(
            lambda sync, join: _run_init(spec, root, bundle, sync, fifo_fd, sources, fresh, devpts=devpts,
                                         console=on_terminal, join=join),
            flags=clone_flags(spec), pid_namespace=pid_ns.path if pid_ns is not None else None, cgroup=cgroup,
            clone_parent=clone_parent, stdio=stdio, keep_sync=exec_fifo is None, what="the container's init",
            controlling_terminal=on_terminal)
    finally:
        if fifo_fd is not None:
            os.close(fifo_fd)


def start_child(child_main, *, flags: int, pid_namespace: str | int | None, cgroup, clone_parent: bool,
                stdio: tuple[int, int, int] | None, keep_sync: bool, what: str,
                controlling_terminal: bool = False) -> Child:
    """Clone a child that runs ``child_main(sync)``, then drive the go/ready handshake.

    Shared by the container's init (``spawn_init``) and a process joining a
    running container (``runtime.exec``); the module docstring draws the wire.

    Args:
        child_main: runs in the child as ``child_main(sync, join)``: its end of
            the sync pair, and what puts it in ``cgroup`` (None without one), for
            ``run_child``. It must never return (``run_child`` ends in execve or ``os._exit``).
        flags: CLONE_NEW* flags for the clone.
        pid_namespace: a path or a pidfd whose PID namespace the child is
            cloned into (setns(CLONE_NEWPID) only affects children), or None.
        what: names the child in errors ("the container's init").
        controlling_terminal: ``stdio[0]`` is a pty slave; the child starts a
            session with it as controlling terminal (``process.terminal``).

    Raises:
        SpawnError: the clone, or the child's set-up, failed.
    """
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    flags |= _syscalls.CLONE_PARENT if clone_parent else 0
    into: int | None = None
    try:
        clone_dir = cgroup.clone_target() if cgroup is not None else None
        if clone_dir is not None:
            into = os.open(clone_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        with _pid_namespace_of(pid_namespace):
            pid, cloned_into = _clone(flags, into)
            if pid == 0:                                      # the child
                # Never back into the caller's code, not even through this
                # with-block: its exit would setns to an ancestor PID namespace.
                try:
                    parent_end.close()
                    if stdio is not None:
                        for target, fd in enumerate(stdio):
                            if fd != target:
                                os.dup2(fd, target)   # dup2 leaves the copy inheritable
                        if controlling_terminal:
                            # Before any set-up: job control and ^C in the container need it.
                            terminal.make_controlling_terminal(0)
                    join = None
                    if cgroup is not None:
                        join = lambda: cgroup.join_self(cloned_into=cloned_into)   # noqa: E731
                    child_main(child_end, join)       # never returns
                finally:
                    os._exit(1)
    except OSError as exc:
        parent_end.close()
        detail = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror or str(exc)
        raise SpawnError(f"failed to start {what}: {detail}") from exc
    finally:
        child_end.close()
        if into is not None:
            os.close(into)
    return _await_ready(pid, parent_end, keep_sync=keep_sync, ours=not clone_parent)


def _clone(flags: int, into: int | None) -> tuple[int, bool]:
    """clone, into the cgroup directory ``into`` when given and the kernel can (5.7+);
    (pid or 0, whether it cloned into it). Without CLONE_INTO_CGROUP the child
    joins that hierarchy itself too (``join_self``)."""
    if into is not None:
        try:
            return _syscalls.clone(flags, cgroup_fd=into), True
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.E2BIG):
                raise
    return _syscalls.clone(flags), False


def _await_ready(pid: int, sync: socket.socket, *, keep_sync: bool, ours: bool) -> Child:
    child = Child(pid, os.pidfd_open(pid), sync)

    def end() -> str:
        # Our child: reap it and say how it ended. Our parent's (CLONE_PARENT):
        # wait until it is gone; the parent reaps it and knows the status.
        if ours:
            return str(child.wait())
        select.select([child.pidfd], [], [], 10)
        return "its parent reaps it"

    try:
        try:
            sync.send(b"go")
            message = sync.recv(_MSG_MAX)
        except (ConnectionResetError, BrokenPipeError):
            # The init died with "go" unread (killed: the OOM killer at a tiny
            # memory limit, say): the same as an EOF before "ready".
            message = b""
    except BaseException:
        child.send_signal(signal.SIGKILL)
        end()
        child.close()
        raise
    if message == b"ready":
        if not keep_sync:
            sync.close()
            child._sync = None
        return child
    error = _decode_error(message) if message else None
    status = end()
    child.close()
    raise error or SpawnError(f"container init ended before it was ready ({status})")


def _decode_error(message: bytes) -> SpawnError:
    try:
        kind, body = message.split(b" ", 1)
        data = json.loads(body)
        assert kind == b"error"
        return SpawnError(data["message"], exit_code=int(data["exit_code"]))
    except (ValueError, KeyError, AssertionError):
        return SpawnError(f"container init sent an unreadable message: {message[:200]!r}")


class _pid_namespace_of:
    """Point our children's PID namespace at ``target`` (a path or a pidfd) for one clone."""

    def __init__(self, target: str | int | None) -> None:
        self._target = target
        self._restore = -1

    def __enter__(self) -> None:
        if self._target is None:
            return
        self._restore = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        if isinstance(self._target, int):       # a pidfd: setns(2) takes one since Linux 5.8
            _syscalls.setns(self._target, _syscalls.CLONE_NEWPID, path=f"pidfd {self._target}")
            return
        target = os.open(self._target, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _syscalls.setns(target, _syscalls.CLONE_NEWPID, path=self._target)
        finally:
            os.close(target)

    def __exit__(self, *exc: object) -> None:
        if self._restore >= 0:
            _syscalls.setns(self._restore, _syscalls.CLONE_NEWPID, path="/proc/self/ns/pid")
            os.close(self._restore)


# --- the init side: everything below runs in the cloned child ---------------


def _run_init(spec: Spec, root: str, bundle: str, sync: socket.socket, fifo_fd: int | None,
              cgroup_sources: list[tuple[str, Path]], cgroup_fresh: bool, *, devpts: int | None = None,
              console: bool = False, join=None) -> None:
    run_child(sync, lambda: _set_up(spec, root, bundle, cgroup_sources, cgroup_fresh, devpts=devpts,
                                    console=console),
              spec.process.args, fifo_fd=fifo_fd, join=join)


def run_child(sync: socket.socket, set_up, args: tuple[str, ...], *, fifo_fd: int | None = None,
              join=None) -> None:
    """The child's side of the handshake: wait for "go", ``join()``, ``set_up()``, "ready", execve.
    Never returns.

    ``join`` puts the child in its cgroup (``start_child`` makes it), before
    any other of its code runs. ``set_up`` returns the binary to exec and its
    environment. An exception from either is sent to the parent as "error {message, exit_code}".
    """
    code = 1
    try:
        if sync.recv(_MSG_MAX) != b"go":
            os._exit(1)                 # the parent went away before "go"
        if join is not None:
            join()
        path, env = set_up()
        sync.send(b"ready")
        if fifo_fd is not None:
            # Opening a FIFO for writing blocks until `start` opens it for reading.
            fd = os.open(f"/proc/self/fd/{fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
            os.write(fd, b"0")
            os.close(fd)
        try:
            os.execve(path, list(args), env)
        except OSError as exc:
            code = 127 if exc.errno == errno.ENOENT else 126
            raise SpawnError(f"exec {path}: {exc.strerror}", exit_code=code) from exc
    except BaseException as exc:  # noqa: BLE001 - the child's one boundary: report, then exit
        if isinstance(exc, SpawnError):
            code = exc.exit_code
        message = str(exc) if isinstance(exc, HostError) else f"{type(exc).__name__}: {exc}"
        try:
            sync.send(b"error " + json.dumps({"message": message, "exit_code": code}).encode())
        except OSError:
            pass
    finally:
        os._exit(code)


def _set_up(spec: Spec, root: str, bundle: str, cgroup_sources, cgroup_fresh: bool, *,
            devpts: int | None = None, console: bool = False) -> tuple[str, dict[str, str]]:
    """Everything between "go" and "ready"; returns the binary to exec and its environment."""
    process = spec.process
    _close_inherited_fds()
    for ns in spec.namespaces:
        if ns.path is not None and ns.type != "pid":
            fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _syscalls.setns(fd, NAMESPACE_FLAGS[ns.type], path=ns.path)
            finally:
                os.close(fd)
    network = spec.namespace("network")
    if network is not None and network.path is None:
        net.bring_up_loopback()
    cgroup_ns = spec.namespace("cgroup")
    if cgroup_ns is not None and cgroup_ns.path is None:
        _syscalls.unshare(_syscalls.CLONE_NEWCGROUP)
    rootfs.mount_rootfs(spec, root, bundle=bundle, cgroup_sources=cgroup_sources, cgroup_fresh=cgroup_fresh,
                        devpts=devpts, console=console)
    rootfs.pivot_to(root)
    for key, value in spec.sysctl.items():
        with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
            f.write(value)
    if spec.hostname:
        _syscalls.sethostname(spec.hostname)
    rootfs.finalize_rootfs(spec)
    for rl in process.rlimits:
        limit = lambda v: resource.RLIM_INFINITY if v >= 2**64 - 1 else v  # noqa: E731
        resource.setrlimit(_RLIMITS[rl.type], (limit(rl.soft), limit(rl.hard)))
    if process.oom_score_adj is not None:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(process.oom_score_adj))
    if process.user.umask is not None:
        os.umask(process.user.umask)
    try:
        os.chdir(process.cwd)
    except OSError as exc:
        raise SpawnError(f"cannot chdir to {process.cwd}: {exc.strerror}") from exc
    return become(process)


def become(process: Process) -> tuple[str, dict[str, str]]:
    """The last steps before execve, for an init and an exec alike: the environment, the user
    and its capabilities, no_new_privs, default signal dispositions; the binary's path.

    Raises:
        SpawnError: the command cannot be found (127) or the user not set.
    """
    env = _environ(process)
    if "HOME" not in env:
        # SPEC: silent; runc sets the user's home from the container's /etc/passwd, or "/".
        env["HOME"] = home_of(process.user.uid)
    _become_user(process)
    path = find_executable(process.args[0], env.get("PATH"))
    if process.no_new_privileges:
        _syscalls.set_no_new_privs()
    # Python ignores SIGPIPE and SIGXFSZ, the spawner SIGINT; ignored signals survive execve(2)
    # (^C in a container's terminal would do nothing).
    for signum in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    return path, env


def home_of(uid: int, passwd: str = "/etc/passwd") -> str:
    """The home directory of ``uid`` in ``passwd`` (read in the container's root), or "/"."""
    try:
        with open(passwd, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 6 and fields[2] == str(uid) and fields[5]:
                    return fields[5]
    except OSError:
        pass
    return "/"


def _become_user(process: Process) -> None:
    """Bounding set, then uid/gid with the permitted set kept, then the capability sets (runc)."""
    last = caps.last_cap()
    if process.capabilities is not None:
        caps.drop_bounding_set(process.capabilities, last=last)
    _syscalls.set_keepcaps(True)
    user = process.user
    os.setgroups(list(user.additional_gids))
    os.setresgid(user.gid, user.gid, user.gid)
    os.setresuid(user.uid, user.uid, user.uid)
    _syscalls.set_keepcaps(False)
    if process.capabilities is not None:
        caps.set_capabilities(process.capabilities, last=last)


def find_executable(name: str, search_path: str | None) -> str:
    """Resolve ``name`` as execvp(3) would, in the current root.

    Raises:
        SpawnError: 127 when nothing is found, 126 when it is found but is not
            an executable file (runc's and the shell's codes).
    """
    if "/" in name:
        candidates = [name]
    else:
        candidates = [os.path.join(d or ".", name) for d in (search_path or "").split(":")] if search_path else []
    denied = None
    for candidate in candidates:
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and os.access(candidate, os.X_OK):
            return candidate
        denied = candidate
    if denied is not None:
        raise SpawnError(f'exec: "{name}": permission denied', exit_code=126)
    if "/" in name:
        raise SpawnError(f'exec: "{name}": stat {name}: no such file or directory', exit_code=127)
    raise SpawnError(f'exec: "{name}": executable file not found in $PATH', exit_code=127)


def _environ(process: Process) -> dict[str, str]:
    return dict(item.split("=", 1) for item in process.env)


def _close_inherited_fds() -> None:
    # Python opens every fd close-on-exec (PEP 446); what the caller inherited
    # from its own parent may not be, and must not leak into the container.
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass


def _all_caps(process: Process) -> tuple[str, ...]:
    c = process.capabilities
    return c.bounding + c.effective + c.inheritable + c.permitted + c.ambient
