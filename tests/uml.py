"""Run a command inside a user-mode-linux kernel with a real cgroup v2 hierarchy.

The host runs cgroup v1 (hybrid); tests marked ``cgroup_v2`` run instead in
Debian's ``user-mode-linux`` kernel (``/usr/bin/linux.uml``), booted with the
host filesystem as its root (hostfs), so the guest sees the same repository
and virtualenv at the same paths. ``tests/uml_init.sh`` is the guest's init:
it mounts proc, sysfs, devtmpfs, tmpfs on /tmp and /run, cgroup2 on
/sys/fs/cgroup with every controller enabled in the root's subtree_control
(cpu, io, memory, pids; this kernel has no cpuset), loads overlay, veth and
bridge, runs the command as root and powers off.

    from tests.uml import run_in_uml, uml_unavailable_reason
    res = run_in_uml([".venv/bin/python", "-m", "pytest", ...], cwd=repo)
    res.returncode, res.output, res.boot_log

The guest's /tmp, /run, /dev/shm, /dev and /sys/fs/cgroup are its own (tmpfs,
devtmpfs, cgroup2); every other path is the host's, read-write, through hostfs
(so a test that writes into the repository or /var/tmp writes on the host).
/dev/ubda (98:0) is a 256 MiB sparse scratch disk, for io.max tests.
Each run has a hard timeout; linux.uml and its helper processes live in a
process group made for the run and are killed by that group's id only.

Debugging: CORRAL_UML_KEEP=1 keeps the job directory (boot.log, run.sh,
output, status, guest.txt) and prints its path.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

UML_KERNEL = "/usr/bin/linux.uml"
UML_MODULES = "/usr/lib/uml/modules"
INIT_SCRIPT = Path(__file__).resolve().with_name("uml_init.sh")

# The command's environment starts from this; ``env`` adds to or overrides it.
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TMPDIR": "/tmp",
    "TERM": "dumb",
    # The guest shares the host's files: do not race the host writing .pyc files.
    "PYTHONDONTWRITEBYTECODE": "1",
    # So a timed-out run's partial output is in the output file.
    "PYTHONUNBUFFERED": "1",
    # Tests can tell they run in the guest; run_in_uml refuses to nest.
    "CORRAL_IN_UML": "1",
}

# Loaded in every guest (with their dependencies): overlay for image layers,
# veth and bridge for container networking. The kernel has no usable modprobe
# helper in the guest (there is no /sbin/modprobe on the host), so these are
# loaded up front by the init.
DEFAULT_MODULES = ("overlay", "veth", "bridge")

# Size of the guest's scratch disk /dev/ubda (98:0): raw, no filesystem.
DISK_BYTES = 256 * 1024 * 1024
DISK_DEVICE = "/dev/ubda"
DISK_MAJOR_MINOR = "98:0"

_TAIL = 4000


class UmlError(RuntimeError):
    """The guest died, or did not finish in time; the message has the log tails."""


@dataclasses.dataclass(frozen=True)
class UmlResult:
    returncode: int
    output: str
    boot_log: str
    boot_s: float = 0.0   # host start to the guest's init starting the command
    total_s: float = 0.0  # host start to the UML process gone
    guest_info: str = ""  # kernel, controllers, modules and mounts the guest had


def uml_unavailable_reason() -> str | None:
    """None when run_in_uml can work here; else why not."""
    if os.environ.get("CORRAL_IN_UML"):
        return "already inside user-mode-linux (CORRAL_IN_UML is set)"
    if not os.path.exists(UML_KERNEL):
        return "linux.uml not installed (Debian package user-mode-linux)"
    if not os.access(UML_KERNEL, os.X_OK):
        return f"{UML_KERNEL} is not executable"
    if not INIT_SCRIPT.is_file() or not os.access(INIT_SCRIPT, os.X_OK):
        return f"{INIT_SCRIPT} missing or not executable"
    if not os.path.isdir(UML_MODULES):
        return f"{UML_MODULES} missing (user-mode-linux package incomplete): no overlayfs in the guest"
    if not os.access("/bin/busybox", os.X_OK):
        return "/bin/busybox missing (Debian package busybox-static): the guest init runs on it"
    if not os.path.isdir("/dev/shm") or not os.access("/dev/shm", os.W_OK | os.X_OK):
        return "/dev/shm not writable: user-mode-linux keeps the guest's memory there"
    return None


def _kernel_release() -> str:
    dirs = sorted(d for d in os.listdir(UML_MODULES) if os.path.isfile(os.path.join(UML_MODULES, d, "modules.dep")))
    if len(dirs) != 1:
        raise UmlError(f"expected one module tree under {UML_MODULES}, found {dirs}")
    return dirs[0]


def module_paths(names: list[str] | tuple[str, ...]) -> list[str]:
    """The .ko files to insmod, dependencies first, for modules ``names``.

    Built-in modules are skipped; an unknown name is an error.
    """
    base = os.path.join(UML_MODULES, _kernel_release())
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    with open(os.path.join(base, "modules.dep")) as f:
        for line in f:
            path, _, rest = line.partition(":")
            deps[path] = rest.split()
            by_name[_mod_name(path)] = path
    builtin: set[str] = set()
    with open(os.path.join(base, "modules.builtin")) as f:
        builtin = {_mod_name(line.strip()) for line in f if line.strip()}
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for d in deps.get(path, []):
            visit(d)
        order.append(path)

    for name in names:
        key = name.replace("-", "_")
        if key in builtin:
            continue
        if key not in by_name:
            raise ValueError(f"no kernel module {name!r} in {base}")
        visit(by_name[key])
    return [os.path.join(base, p) for p in order]


def _mod_name(path: str) -> str:
    return os.path.basename(path).split(".ko")[0].replace("-", "_")


def _job_parent() -> str:
    # The guest mounts tmpfs over /run, /dev/shm and /tmp after it has bound
    # the job dir elsewhere; /run, /dev, /proc and /sys are never usable.
    d = tempfile.gettempdir()
    if d.split("/")[1:2] in (["run"], ["dev"], ["proc"], ["sys"]):
        d = "/var/tmp"
    return d


def _tail(text: str, n: int = _TAIL) -> str:
    return text if len(text) <= n else "...\n" + text[-n:]


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def _die_with_parent() -> None:
    # In the child before exec: SIGKILL linux.uml if the harness's process dies
    # (e.g. CI killing pytest), so no guest outlives its run.
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def run_in_uml(
    argv: list[str],
    *,
    cwd: str,
    env: dict[str, str] | None = None,
    timeout_s: float = 600,
    mem: str = "768M",
    modules: list[str] | None = None,
) -> UmlResult:
    """Boot linux.uml, run ``argv`` as root in ``cwd`` and return its status and output.

    ``returncode`` is the command's exit status (128+N when killed by signal N).
    Raises UmlError, with the tails of the boot log and of the output, when the
    guest dies before the command finished or when ``timeout_s`` (boot included)
    runs out; the UML process tree is then killed.
    ``modules`` names extra kernel modules to load (DEFAULT_MODULES always are),
    e.g. ``["br_netfilter", "nf_tables"]``.
    """
    reason = uml_unavailable_reason()
    if reason is not None:
        raise UmlError(reason)
    if not argv:
        raise ValueError("empty argv")
    if "=" in argv[0]:
        raise ValueError(f"argv[0] may not contain '=': {argv[0]!r}")
    full_env = dict(BASE_ENV)
    full_env.update(env or {})
    for k in full_env:
        if not k or "=" in k or "\0" in k:
            raise ValueError(f"bad environment variable name {k!r}")
    for s in [*argv, *full_env.values(), cwd]:
        if "\0" in s:
            raise ValueError("NUL byte in argv, env or cwd")
    cwd = os.path.abspath(cwd)
    if not os.path.isdir(cwd):
        raise ValueError(f"cwd {cwd!r} is not a directory")

    job = Path(tempfile.mkdtemp(prefix="corral-uml-", dir=_job_parent()))
    if any(c.isspace() for c in str(job)):  # goes on the kernel command line
        shutil.rmtree(job, ignore_errors=True)
        raise UmlError(f"job dir {job} contains whitespace")
    try:
        return _run(job, argv, cwd, full_env, timeout_s, mem, modules or [])
    finally:
        if os.environ.get("CORRAL_UML_KEEP"):  # debugging: keep boot.log, output, run.sh
            print(f"tests/uml.py: kept {job}")
        else:
            shutil.rmtree(job, ignore_errors=True)


def _run(
    job: Path, argv: list[str], cwd: str, env: dict[str, str], timeout_s: float, mem: str, modules: list[str]
) -> UmlResult:
    q = shlex.quote
    (job / "cwd").write_text(cwd)      # the init binds it back if it lies under /tmp
    (job / "run.sh").write_text(
        "cd -- " + q(cwd) + " || exit 125\n"
        "exec /usr/bin/env -i " + " ".join(q(f"{k}={v}") for k, v in env.items()) + " " + " ".join(map(q, argv)) + "\n"
    )
    (job / "modules").write_text("".join(p + "\n" for p in module_paths([*DEFAULT_MODULES, *modules])))
    (job / "uml").mkdir()
    # A scratch block device, /dev/ubda (major:minor 98:0), so io.max and
    # io.stat have a device to act on. Sparse: it costs nothing until written.
    with open(job / "disk.img", "wb") as f:
        f.truncate(DISK_BYTES)
    boot_log_path = job / "boot.log"
    cmdline = [
        UML_KERNEL,
        f"mem={mem}",
        f"umid=corral-{os.getpid()}-{job.name[-8:]}",
        f"uml_dir={job / 'uml'}",  # not ~/.uml: a killed UML leaves its dir behind
        f"ubd0={job / 'disk.img'}",
        "printk.time=1",
        "rootfstype=hostfs",
        "rootflags=/",
        "rw",
        "con0=null,fd:1",  # no terminal: input from nothing, console to the log file
        "con=null",
        "ssl=null",
        f"init={INIT_SCRIPT}",
        "--",
        str(job),
    ]
    uml_env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "TMPDIR": "/dev/shm",  # the guest's RAM is a file here: keep it off disk
        "HOME": str(job),
    }
    start = time.monotonic()
    deadline = start + timeout_s
    boot_s = 0.0
    with open(boot_log_path, "wb") as log:
        proc = subprocess.Popen(
            cmdline,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=uml_env,
            cwd=str(job),
            start_new_session=True,  # pgid == proc.pid: kill exactly this tree
            preexec_fn=_die_with_parent,
        )
    pgid = proc.pid
    timed_out = False
    try:
        # Wait without reaping (WNOWAIT): while linux.uml is an unreaped zombie
        # its pid, hence the group id, cannot be reused, so the killpg below
        # can only hit this run's processes.
        while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            if not boot_s and b"uml-init: running" in boot_log_path.read_bytes()[-8192:]:
                boot_s = time.monotonic() - start
            if time.monotonic() > deadline:
                timed_out = True
                break
            time.sleep(0.05)
    finally:
        # Always, even after a clean exit: UML helper processes can outlive the
        # main one (they do after a guest panic).
        _kill_group(pgid)
        proc.wait()
        # SIGKILLed, UML and its helpers take ~1 s to go (768M of guest RAM to unmap).
        for _ in range(500):
            if not _group_alive(pgid):
                break
            time.sleep(0.02)
    total_s = time.monotonic() - start

    boot_log = _read(boot_log_path)
    output = _read(job / "output")
    status = _read(job / "status").strip()
    if not boot_s:
        boot_s = total_s
    if timed_out or not status:
        what = (
            f"timed out after {timeout_s:.0f}s"
            if timed_out
            else f"guest stopped (linux.uml exit status {proc.returncode}) before the command finished"
        )
        raise UmlError(
            f"user-mode-linux run of {argv!r}: {what}\n"
            f"--- boot log (tail) ---\n{_tail(boot_log)}\n"
            f"--- command output (tail) ---\n{_tail(output)}"
        )
    return UmlResult(
        returncode=int(status), output=output, boot_log=boot_log, boot_s=boot_s, total_s=total_s,
        guest_info=_read(job / "guest.txt"),
    )


def guest_report(result: UmlResult) -> str:
    """What the init script logged (the lines it printed to the console)."""
    return "\n".join(line for line in result.boot_log.splitlines() if line.startswith("uml-init:"))
