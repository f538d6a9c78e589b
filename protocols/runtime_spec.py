"""OCI runtime-spec ``config.json`` -> frozen values (runtime-spec v1.0/1.1).

Pure: takes the document (bytes, str or an already decoded dict) and returns a
``Spec``; it never looks at the filesystem. Every error is a ``SpecError`` whose
message starts with the JSON path of the offending field, so a user can find it:
``process.args: must be a non-empty list of strings``.

Rules:

1. Everything ``runc spec`` writes is read, plus what the runtime acts on
   (resources, namespaces with ``path``, devices, sysctl, propagation).
2. Fields the runtime ignores (seccomp, apparmor, selinux, hooks) are kept raw
   in ``Spec.extra`` rather than half-parsed.
3. ``linux.resources`` stays a dict here; ``runtime.cgroups.resources_from_oci``
   converts it to corral units, next to the code that writes the files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from . import _fields
from .errors import SpecError

# SPEC: runtime-spec config-linux.md lists these; "time" needs Linux 5.6.
NAMESPACE_TYPES = frozenset({"pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"})

RLIMIT_TYPES = frozenset({
    "RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE", "RLIMIT_LOCKS",
    "RLIMIT_MEMLOCK", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_NOFILE", "RLIMIT_NPROC",
    "RLIMIT_RSS", "RLIMIT_RTPRIO", "RLIMIT_RTTIME", "RLIMIT_SIGPENDING", "RLIMIT_STACK",
})


@dataclass(frozen=True)
class User:
    uid: int = 0
    gid: int = 0
    umask: int | None = None
    additional_gids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Capabilities:
    """Capability names (``CAP_KILL``) per set; validated against the kernel by runtime."""

    bounding: tuple[str, ...] = ()
    effective: tuple[str, ...] = ()
    inheritable: tuple[str, ...] = ()
    permitted: tuple[str, ...] = ()
    ambient: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rlimit:
    type: str
    soft: int
    hard: int


@dataclass(frozen=True)
class Process:
    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    terminal: bool = False
    user: User = field(default_factory=User)
    capabilities: Capabilities | None = None     # None: leave the caps as they are (runc)
    rlimits: tuple[Rlimit, ...] = ()
    no_new_privileges: bool = False
    oom_score_adj: int | None = None


@dataclass(frozen=True)
class Root:
    path: str
    readonly: bool = False


@dataclass(frozen=True)
class Mount:
    destination: str
    type: str | None = None
    source: str | None = None
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Namespace:
    type: str
    path: str | None = None      # join this namespace instead of creating one


@dataclass(frozen=True)
class Device:
    path: str
    type: str                    # "c", "b", "u" or "p"
    major: int = 0
    minor: int = 0
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None


@dataclass(frozen=True)
class Spec:
    oci_version: str
    root: Root
    process: Process | None = None
    hostname: str | None = None
    mounts: tuple[Mount, ...] = ()
    namespaces: tuple[Namespace, ...] = ()
    resources: dict[str, Any] = field(default_factory=dict)
    cgroups_path: str | None = None
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    devices: tuple[Device, ...] = ()
    sysctl: dict[str, str] = field(default_factory=dict)
    rootfs_propagation: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def namespace(self, type_: str) -> Namespace | None:
        """The namespace entry of ``type_``, or None when the spec shares the host's."""
        for ns in self.namespaces:
            if ns.type == type_:
                return ns
        return None


def parse_spec(document: bytes | str | dict[str, Any]) -> Spec:
    """Parse and validate a runtime-spec configuration.

    Args:
        document: the bytes or text of ``config.json``, or the decoded object.

    Returns:
        The validated ``Spec``.

    Raises:
        SpecError: not JSON, or a field is missing, of the wrong type or out of
            range; the message begins with the field's path.
    """
    if isinstance(document, (bytes, str)):
        try:
            document = json.loads(document)
        except ValueError as exc:
            raise SpecError(f"config.json is not valid JSON: {exc}") from exc
    doc = _obj(document, "config")
    linux = _obj(doc.get("linux", {}), "linux")
    root = _obj(_required(doc, "root", "root"), "root")
    known = {"ociVersion", "root", "process", "hostname", "domainname", "mounts", "linux", "annotations"}
    return Spec(
        oci_version=_str(_required(doc, "ociVersion", "ociVersion"), "ociVersion"),
        root=Root(path=_nonempty_str(_required(root, "path", "root.path"), "root.path"),
                  readonly=_bool(root.get("readonly", False), "root.readonly")),
        process=_process(doc["process"]) if doc.get("process") is not None else None,
        hostname=_str(doc["hostname"], "hostname") if doc.get("hostname") is not None else None,
        mounts=tuple(_mount(m, f"mounts[{i}]") for i, m in enumerate(_list(doc.get("mounts", []), "mounts"))),
        namespaces=_namespaces(linux.get("namespaces", [])),
        resources=_obj(linux.get("resources", {}), "linux.resources"),
        cgroups_path=_str(linux["cgroupsPath"], "linux.cgroupsPath") if linux.get("cgroupsPath") else None,
        masked_paths=_abs_paths(linux.get("maskedPaths", []), "linux.maskedPaths"),
        readonly_paths=_abs_paths(linux.get("readonlyPaths", []), "linux.readonlyPaths"),
        devices=tuple(_device(d, f"linux.devices[{i}]") for i, d in enumerate(_list(linux.get("devices", []), "linux.devices"))),
        sysctl={_str(k, "linux.sysctl"): _str(v, f"linux.sysctl.{k}") for k, v in _obj(linux.get("sysctl", {}), "linux.sysctl").items()},
        rootfs_propagation=_propagation(linux.get("rootfsPropagation")),
        annotations={_str(k, "annotations"): _str(v, f"annotations.{k}") for k, v in _obj(doc.get("annotations", {}), "annotations").items()},
        extra={k: v for k, v in doc.items() if k not in known},
    )


def parse_process(document: dict[str, Any]) -> Process:
    """A runtime-spec ``process`` object alone (what ``runc exec --process`` reads).

    Raises:
        SpecError: as ``parse_spec``; paths start with ``process``.
    """
    return _process(document)


def _process(value: Any) -> Process:
    proc = _obj(value, "process")
    args = _list(_required(proc, "args", "process.args"), "process.args")
    if not args or not all(isinstance(a, str) for a in args) or not args[0]:
        raise SpecError("process.args: must be a non-empty list of strings")
    env = _list(proc.get("env", []), "process.env")
    for i, item in enumerate(env):
        if not isinstance(item, str) or "=" not in item:
            raise SpecError(f"process.env[{i}]: must be a 'KEY=value' string, got {item!r}")
    cwd = _str(proc.get("cwd", "/"), "process.cwd")
    if not cwd.startswith("/"):
        raise SpecError(f"process.cwd: must be an absolute path, got {cwd!r}")
    user = _obj(proc.get("user", {}), "process.user")
    caps = proc.get("capabilities")
    oom = proc.get("oomScoreAdj")
    return Process(
        args=tuple(args),
        env=tuple(env),
        cwd=cwd,
        terminal=_bool(proc.get("terminal", False), "process.terminal"),
        user=User(
            uid=_id(user.get("uid", 0), "process.user.uid"),
            gid=_id(user.get("gid", 0), "process.user.gid"),
            umask=_id(user["umask"], "process.user.umask") if user.get("umask") is not None else None,
            additional_gids=tuple(_id(g, f"process.user.additionalGids[{i}]")
                                  for i, g in enumerate(_list(user.get("additionalGids", []), "process.user.additionalGids"))),
        ),
        capabilities=_capabilities(caps) if caps is not None else None,
        rlimits=tuple(_rlimit(r, f"process.rlimits[{i}]") for i, r in enumerate(_list(proc.get("rlimits", []), "process.rlimits"))),
        no_new_privileges=_bool(proc.get("noNewPrivileges", False), "process.noNewPrivileges"),
        oom_score_adj=_int(oom, "process.oomScoreAdj", -1000, 1000) if oom is not None else None,
    )


def _capabilities(value: Any) -> Capabilities:
    caps = _obj(value, "process.capabilities")
    sets = {}
    for key in ("bounding", "effective", "inheritable", "permitted", "ambient"):
        names = _list(caps.get(key) or [], f"process.capabilities.{key}")
        for name in names:
            if not isinstance(name, str) or not name.startswith("CAP_"):
                raise SpecError(f"process.capabilities.{key}: {name!r} is not a capability name (CAP_...)")
        sets[key] = tuple(names)
    return Capabilities(**sets)


def _rlimit(value: Any, where: str) -> Rlimit:
    rl = _obj(value, where)
    type_ = _str(_required(rl, "type", f"{where}.type"), f"{where}.type")
    if type_ not in RLIMIT_TYPES:
        raise SpecError(f"{where}.type: unknown rlimit {type_!r}")
    soft = _int(_required(rl, "soft", f"{where}.soft"), f"{where}.soft", 0, 2**64 - 1)
    hard = _int(_required(rl, "hard", f"{where}.hard"), f"{where}.hard", 0, 2**64 - 1)
    if soft > hard:
        raise SpecError(f"{where}: soft limit {soft} exceeds hard limit {hard}")
    return Rlimit(type_, soft, hard)


def _mount(value: Any, where: str) -> Mount:
    m = _obj(value, where)
    dest = _str(_required(m, "destination", f"{where}.destination"), f"{where}.destination")
    if not dest.startswith("/"):
        raise SpecError(f"{where}.destination: must be an absolute path, got {dest!r}")
    options = _list(m.get("options", []), f"{where}.options")
    if not all(isinstance(o, str) for o in options):
        raise SpecError(f"{where}.options: must be a list of strings")
    return Mount(
        destination=dest,
        type=_str(m["type"], f"{where}.type") if m.get("type") is not None else None,
        source=_str(m["source"], f"{where}.source") if m.get("source") is not None else None,
        options=tuple(options),
    )


def _namespaces(value: Any) -> tuple[Namespace, ...]:
    seen: set[str] = set()
    out = []
    for i, item in enumerate(_list(value, "linux.namespaces")):
        ns = _obj(item, f"linux.namespaces[{i}]")
        type_ = _str(_required(ns, "type", f"linux.namespaces[{i}].type"), f"linux.namespaces[{i}].type")
        if type_ not in NAMESPACE_TYPES:
            raise SpecError(f"linux.namespaces[{i}].type: unknown namespace type {type_!r} "
                            f"(one of {', '.join(sorted(NAMESPACE_TYPES))})")
        if type_ in seen:
            raise SpecError(f"linux.namespaces[{i}].type: namespace {type_!r} listed twice")
        seen.add(type_)
        path = ns.get("path")
        if path is not None and (not isinstance(path, str) or not path.startswith("/")):
            raise SpecError(f"linux.namespaces[{i}].path: must be an absolute path, got {path!r}")
        out.append(Namespace(type_, path or None))
    return tuple(out)


def _device(value: Any, where: str) -> Device:
    d = _obj(value, where)
    path = _str(_required(d, "path", f"{where}.path"), f"{where}.path")
    if not path.startswith("/dev/"):
        raise SpecError(f"{where}.path: must be under /dev, got {path!r}")
    type_ = _str(_required(d, "type", f"{where}.type"), f"{where}.type")
    if type_ not in ("c", "b", "u", "p"):
        raise SpecError(f"{where}.type: must be one of c, b, u, p, got {type_!r}")
    return Device(
        path=path, type=type_,
        major=_int(d.get("major", 0), f"{where}.major", 0, 2**32 - 1),
        minor=_int(d.get("minor", 0), f"{where}.minor", 0, 2**32 - 1),
        file_mode=_int(d["fileMode"], f"{where}.fileMode", 0, 0o7777) if d.get("fileMode") is not None else None,
        uid=_id(d["uid"], f"{where}.uid") if d.get("uid") is not None else None,
        gid=_id(d["gid"], f"{where}.gid") if d.get("gid") is not None else None,
    )


def _propagation(value: Any) -> str | None:
    if value in (None, ""):
        return None
    allowed = ("shared", "slave", "private", "unbindable", "rshared", "rslave", "rprivate", "runbindable")
    if value not in allowed:
        raise SpecError(f"linux.rootfsPropagation: must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _abs_paths(value: Any, where: str) -> tuple[str, ...]:
    paths = _list(value, where)
    for i, p in enumerate(paths):
        if not isinstance(p, str) or not p.startswith("/"):
            raise SpecError(f"{where}[{i}]: must be an absolute path, got {p!r}")
    return tuple(paths)


# Field checks raising SpecError (shared with the other formats: _fields.py).
_required = partial(_fields.required, error=SpecError)
_obj = partial(_fields.obj, error=SpecError)
_list = partial(_fields.list_, error=SpecError)
_str = partial(_fields.string, error=SpecError)


def _nonempty_str(value: Any, where: str) -> str:
    if not _str(value, where):
        raise SpecError(f"{where}: must not be empty")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"{where}: must be true or false, got {value!r}")
    return value


def _int(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{where}: must be an integer, got {value!r}")
    if not low <= value <= high:
        raise SpecError(f"{where}: {value} is out of range {low}..{high}")
    return value


def _id(value: Any, where: str) -> int:
    return _int(value, where, 0, 2**32 - 2)


def default_spec_document(*, args: tuple[str, ...] = ("sh",), terminal: bool = True) -> dict[str, Any]:
    """The configuration ``runc spec`` writes (runc 1.1), as a fresh dict.

    ``corral runtime spec`` prints it; bundles made by either tool are interchangeable.
    """
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    return {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: list(caps) for k in ("bounding", "effective", "permitted", "ambient")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "runc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }
