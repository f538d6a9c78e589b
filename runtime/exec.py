"""Starting a process inside a running container (``docker exec``, ``runc exec``).

The exec'd process is cloned exactly as an init is (``spawn.start_child``: the
go/ready/EOF handshake over a SEQPACKET pair, the cgroup joined before it runs
any code of its own), but into the namespaces of a live process instead of
new ones:

    caller (the spawner)                    child
    setns(init pidfd, CLONE_NEWPID)         (only our *children* change PID namespace)
    clone(CLONE_PARENT) ──────────────────> PID N of the container's PID namespace
      (clone3 into the v2 cgroup if any)
    setns back to our own PID namespace
    send "go" ────────────────────────────> joins the container's cgroup (join_self);
                                            setns(init pidfd, NEWIPC|NEWUTS|NEWNET|NEWCGROUP|NEWNS)
                                            chdir, HOME, user, capabilities, no_new_privs,
                                            look the binary up
                        <────────────────── "ready"  or  "error" {message, exit_code}
                                            execve(); EOF on the pair means it worked

One setns(2) call with a pidfd and several CLONE_NEW* flags (Linux 5.8+)
joins them all at once, and the kernel orders them itself (the mount
namespace after the others, so /proc and the root are the container's): no
/proc/PID/ns/* paths, no race with PID reuse. Joining the mount namespace
resets root and cwd to that namespace's root, which after the init's
pivot_root is the container's root.

Rejected designs:

- fork, setns(NEWPID), fork again (runc's nsexec): two forks and a grandchild
  the caller cannot wait on; setting the PID namespace for one clone in the
  single-threaded spawner gives the same result with one process.
- Reading /etc/passwd here for ``-u name``: the daemon resolves the user with
  ``protocols.container_config.resolve_user`` against the container's root
  before it asks, so this side only sets numbers.
- CLONE_INTO_CGROUP: needs clone3 and a v2 cgroup fd; writing cgroup.procs
  before "go" works on v1 and v2 alike, the way the init joins.

Only single-threaded processes may call ``spawn_exec`` (see ``_syscalls.clone``).
"""

from __future__ import annotations

import os
import signal

from protocols.runtime_spec import Process

from . import _syscalls
from .errors import SpawnError
from .spawn import (
    NAMESPACE_FLAGS,
    Child,
    _close_inherited_fds,
    become,
    run_child,
    start_child,
)

# What an exec joins: every namespace of the container but the PID one (joined
# at clone time) and the user/time ones (not supported by this runtime).
JOINED_NAMESPACES = ("ipc", "uts", "network", "cgroup", "mount")


def join_flags(namespaces: list[str] | tuple[str, ...]) -> int:
    """The CLONE_NEW* flags for one setns(pidfd, flags) into the container's ``namespaces`` (types).

    The PID namespace is left out: it is entered at clone time. Namespaces the
    container shares with the host need no joining but do no harm either.

    Raises:
        ValueError: a namespace type the runtime does not know.
    """
    flags = 0
    for ns in namespaces:
        if ns not in NAMESPACE_FLAGS:
            raise ValueError(f"unknown namespace type {ns!r}")
        if ns in JOINED_NAMESPACES:
            flags |= NAMESPACE_FLAGS[ns]
    return flags


def spawn_exec(init_pidfd: int, process: Process, *, namespaces: list[str] | tuple[str, ...], cgroup=None,
               clone_parent: bool = False, stdio: tuple[int, int, int] | None = None) -> Child:
    """Start ``process`` inside the container whose init ``init_pidfd`` refers to.

    Args:
        init_pidfd: a pidfd of the container's init (it must be running).
        process: what to run: args, env (complete: nothing is added but HOME),
            cwd, user (numbers), capabilities, no_new_privileges.
        namespaces: the container's namespace types (``linux.namespaces``).
        cgroup: an opened ``runtime.cgroups.Cgroup`` (the container's) to put
            the process in before it runs, or None.
        clone_parent: make it a child of our parent (the spawner does: the
            daemon reaps it and reads its exact status through the pidfd).
        stdio: file descriptors to become its 0, 1 and 2; None keeps ours. With
            ``process.terminal`` they are a pty slave, made its controlling terminal.

    Returns:
        The ``Child``, before exec; ``wait_exec()`` tells whether execve worked.

    Raises:
        SpawnError: 127 when the binary is not found, 126 when it cannot be
            run or the working directory is missing, 1 when the container is
            gone; the message says which. Nothing is left running.
    """
    flags = join_flags(namespaces)
    if not process.args:
        raise SpawnError("exec: no command given", exit_code=126)
    try:
        # Fails with ESRCH once the init has exited: say so, not "no such process".
        signal.pidfd_send_signal(init_pidfd, 0)
    except ProcessLookupError:
        raise SpawnError("exec: the container's init has exited") from None
    return start_child(
        lambda sync, join: run_child(sync, lambda: _set_up_exec(init_pidfd, flags, process), process.args,
                                     join=join),
        flags=0, pid_namespace=init_pidfd, cgroup=cgroup, clone_parent=clone_parent, stdio=stdio,
        keep_sync=True, what="the exec'd process", controlling_terminal=process.terminal and stdio is not None)


# --- the child's side: everything below runs in the cloned child ---------------


def _set_up_exec(init_pidfd: int, flags: int, process: Process) -> tuple[str, dict[str, str]]:
    """Between "go" and "ready": join, change directory, user and capabilities; the binary and env."""
    _close_inherited_fds()
    try:
        _syscalls.setns(init_pidfd, flags, path="the container's init")
    except OSError as exc:
        raise SpawnError(f"exec: cannot join the container's namespaces: {exc.strerror}") from exc
    try:
        os.chdir(process.cwd)
    except OSError as exc:
        # runc's words; docker exec exits 126 for every failure to start.
        raise SpawnError(f"exec: chdir to cwd ({process.cwd!r}) failed: {exc.strerror.lower()}",
                         exit_code=126) from exc
    if process.user.umask is not None:
        os.umask(process.user.umask)
    return become(process)
