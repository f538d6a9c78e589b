"""A Docker create body (Config + HostConfig) and an image config -> an OCI runtime config. Pure.

The Engine takes Docker's create body as its container options, so the Docker
API hands it over unchanged and the CLI builds the same shape from its flags.
Resources stay in OCI form (``linux.resources``); runtime.cgroups converts them
to cgroup files, so there is one conversion path for bundles and containers.

Defaults are moby's (oci/defaults.go, daemon/oci_linux.go): its mounts, its
masked and read-only paths, its 14 capabilities, HOSTNAME and PATH in the
environment, a hostname from the id, swap twice the memory limit.
"""

from __future__ import annotations

import re

from .errors import RemoteProtocolError

TYPE_CHECKING = False       # typing's, without importing typing (~3 ms of every CLI command's start)
if TYPE_CHECKING:
    from typing import Any

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DOCKER_CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]
MASKED_PATHS = ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                "/sys/firmware", "/sys/devices/virtual/powercap"]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
CPU_PERIOD_USEC = 100_000
INIT_DESTINATION = "/sbin/docker-init"        # where moby binds its init (daemon/oci_linux.go)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)b?\s*$", re.IGNORECASE)


class InvalidContainerConfig(RemoteProtocolError):
    """A create body or flag value that cannot become a container; names the field."""


def parse_bytes(text: str | int, *, field: str = "size") -> int:
    """Docker's RAMInBytes: "512m", "1g", "64k", "100" (bytes); binary units.

    Raises:
        InvalidContainerConfig: not a size.
    """
    if isinstance(text, int):
        return text
    m = _SIZE.match(text)
    if not m:
        raise InvalidContainerConfig(f"{field}: invalid size {text!r} (use a number with an optional b, k, m or g)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_cpus(text: str) -> int:
    """--cpus "1.5" -> NanoCpus."""
    try:
        value = float(text)
    except ValueError:
        raise InvalidContainerConfig(f"cpus: invalid value {text!r}") from None
    if value <= 0:
        raise InvalidContainerConfig(f"cpus: must be positive, got {text!r}")
    return int(round(value * 1e9))


def healthcheck_from_flags(*, cmd: str | None = None, interval: str | None = None, timeout: str | None = None,
                           retries: int | None = None, start_period: str | None = None,
                           start_interval: str | None = None, disable: bool = False) -> dict[str, Any] | None:
    """``--health-*`` and ``--no-healthcheck`` -> Docker's ``Config.Healthcheck`` (None: no flag given).

    Durations are Go's ("30s", "1m30s", "500ms") and become nanoseconds; what is
    not given stays 0, which means "the image's, else Docker's default".

    Raises:
        InvalidContainerConfig: a bad or negative value, or --no-healthcheck with --health-* flags.
    """
    from .units import parse_duration_ns

    given = {k: v for k, v in (("Interval", interval), ("Timeout", timeout), ("StartPeriod", start_period),
                               ("StartInterval", start_interval)) if v is not None}
    if disable:
        if cmd is not None or given or retries is not None:
            raise InvalidContainerConfig("--no-healthcheck conflicts with --health-* options")
        return {"Test": ["NONE"]}
    if cmd is None and not given and retries is None:
        return None
    out: dict[str, Any] = {"Test": ["CMD-SHELL", cmd] if cmd else []}
    flag = {"Interval": "interval", "Timeout": "timeout", "StartPeriod": "start-period",
            "StartInterval": "start-interval"}
    for key, text in given.items():
        try:
            out[key] = parse_duration_ns(text, where=f"--health-{flag[key]}")
        except ValueError as exc:
            raise InvalidContainerConfig(str(exc)) from None
    if retries is not None:
        if retries < 0:
            raise InvalidContainerConfig("--health-retries cannot be negative")
        out["Retries"] = retries
    return out


def resolve_user(user: str, passwd: str = "", group: str = "") -> tuple[int, int, list[int]]:
    """Docker's ``-u``: "uid", "uid:gid", "name", "name:group" against the image's files.

    Returns:
        (uid, gid, supplementary gids from /etc/group membership).

    Raises:
        InvalidContainerConfig: a name that the image's files do not know.
    """
    name, _, grp = (user or "0").partition(":")
    users = [line.split(":") for line in passwd.splitlines() if line.count(":") >= 6]
    groups = [line.split(":") for line in group.splitlines() if line.count(":") >= 3]
    entry = next((u for u in users if u[0] == name or u[2] == name), None)
    if name.isdigit():
        uid = int(name)
    elif entry is not None:
        uid = int(entry[2])
    else:
        raise InvalidContainerConfig(f"user: unable to find user {name}: no matching entries in passwd file")
    gid = int(entry[3]) if entry is not None and entry[3].isdigit() else 0
    if grp:
        g = next((x for x in groups if x[0] == grp or x[2] == grp), None)
        if grp.isdigit():
            gid = int(grp)
        elif g is not None:
            gid = int(g[2])
        else:
            raise InvalidContainerConfig(f"user: unable to find group {grp}: no matching entries in group file")
    login = entry[0] if entry is not None else None
    extra = sorted({int(g[2]) for g in groups if login and login in g[3].split(",") and int(g[2]) != gid})
    return uid, gid, extra


def runtime_config(create: dict[str, Any], image: dict[str, Any], *, container_id: str, rootfs: str,
                   etc_files: dict[str, str], privileged_caps: list[str], cgroups_path: str,
                   cgroup_namespace: bool, passwd: str = "", group: str = "",
                   privileged_devices: list[dict[str, Any]] = (), init_path: str | None = None) -> dict[str, Any]:
    """Build the OCI runtime config for a container.

    Args:
        create: Docker's create body (Config fields at top level, ``HostConfig`` inside).
        image: the image config's ``config`` object (Env, Cmd, Entrypoint, WorkingDir, User, ...).
        container_id: 64 hex characters; the default hostname is its first 12.
        rootfs: the container's root (the overlay mount point).
        etc_files: container path -> host file to bind (/etc/hostname, /etc/hosts, /etc/resolv.conf).
        privileged_caps: what --privileged grants: every capability the daemon holds.
        privileged_devices: ``linux.devices`` entries --privileged adds: the host's devices.
        cgroups_path: where the runtime puts the cgroup.
        cgroup_namespace: give the container its own cgroup namespace (Docker's default on v2).
        passwd, group: the image's /etc/passwd and /etc/group, for user names.
        init_path: the host's static tini, for ``HostConfig.Init`` (``--init``): bound read-only
            at ``/sbin/docker-init`` and run as ``/sbin/docker-init -- ARGS`` (Docker's layout).

    Raises:
        InvalidContainerConfig: the message names the field.
    """
    host = create.get("HostConfig") or {}
    privileged = bool(host.get("Privileged"))
    entrypoint = _strings(create.get("Entrypoint"), "Entrypoint")
    cmd = _strings(create.get("Cmd"), "Cmd")
    if entrypoint is None:
        entrypoint = _strings(image.get("Entrypoint"), "image Entrypoint") or []
        if cmd is None:
            cmd = _strings(image.get("Cmd"), "image Cmd")
    args = list(entrypoint) + list(cmd or [])
    if not args:
        raise InvalidContainerConfig("Cmd: no command specified (the image has no CMD or ENTRYPOINT either)")
    if host.get("Init"):
        if not init_path:
            raise InvalidContainerConfig("HostConfig.Init: no init binary on this host (install Debian's tini)")
        args = [INIT_DESTINATION, "--", *args]
    hostname = create.get("Hostname") or container_id[:12]
    env = _environment(image.get("Env"), create.get("Env"), hostname)
    uid, gid, extra_gids = resolve_user(create.get("User") or image.get("User") or "0", passwd, group)
    extra_gids += [int(g) for g in host.get("GroupAdd") or [] if str(g).isdigit()]
    caps = privileged_caps if privileged else _capabilities(host.get("CapAdd"), host.get("CapDrop"))

    from .runtime_spec import default_spec_document   # not at the top: the CLI parses flags with this module

    config = default_spec_document(args=tuple(args), terminal=bool(create.get("Tty")))
    config["process"].update(
        env=env, cwd=create.get("WorkingDir") or image.get("WorkingDir") or "/",
        user={"uid": uid, "gid": gid, **({"additionalGids": extra_gids} if extra_gids else {})},
        capabilities={k: list(caps) for k in ("bounding", "effective", "permitted")},
        noNewPrivileges=False, rlimits=[],
    )
    if host.get("OomScoreAdj"):
        config["process"]["oomScoreAdj"] = int(host["OomScoreAdj"])
    if create.get("Tty"):
        if not any(item.startswith("TERM=") for item in env):
            env.append("TERM=xterm")                     # moby adds it for a terminal
        size = host.get("ConsoleSize")                   # [height, width], API 1.42
        if isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):
            config["process"]["consoleSize"] = {"height": size[0], "width": size[1]}
    config["root"] = {"path": rootfs, "readonly": bool(host.get("ReadonlyRootfs"))}
    config["hostname"] = hostname
    config["mounts"] = _mounts(host, etc_files, privileged)
    if host.get("Init"):
        config["mounts"].append({"destination": INIT_DESTINATION, "type": "bind", "source": init_path,
                                 "options": ["rbind", "ro"]})
    linux = config["linux"]
    linux["namespaces"] = [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")]
    if cgroup_namespace:
        linux["namespaces"].append({"type": "cgroup"})
    linux["cgroupsPath"] = cgroups_path
    linux["resources"] = resources(host)
    if privileged:
        linux["devices"] = list(privileged_devices)
    linux["maskedPaths"] = [] if privileged else list(MASKED_PATHS)
    linux["readonlyPaths"] = [] if privileged else list(READONLY_PATHS)
    return config


def resources(host: dict[str, Any]) -> dict[str, Any]:
    """HostConfig limits -> OCI ``linux.resources`` (moby's rules for swap and CPUs)."""
    out: dict[str, Any] = {}
    memory = int(host.get("Memory") or 0)
    swap = int(host.get("MemorySwap") or 0)
    reservation = int(host.get("MemoryReservation") or 0)
    if memory < 0 or reservation < 0:
        raise InvalidContainerConfig("HostConfig.Memory: must not be negative")
    mem: dict[str, int] = {}
    if memory:
        mem["limit"] = memory
        # moby: swap unset means as much swap as memory; -1 means unlimited.
        mem["swap"] = -1 if swap == -1 else (swap if swap else 2 * memory)
        if swap and swap != -1 and swap < memory:
            raise InvalidContainerConfig("HostConfig.MemorySwap: minimum memoryswap limit should be larger "
                                         "than memory limit, see usage")
    elif swap and swap != -1:
        raise InvalidContainerConfig("HostConfig.MemorySwap: you should always set the Memory limit when using "
                                     "Memoryswap limit, see usage")
    if reservation:
        mem["reservation"] = reservation
    if mem:
        out["memory"] = mem
    cpu: dict[str, Any] = {}
    nano = int(host.get("NanoCpus") or 0)
    if nano and (host.get("CpuQuota") or host.get("CpuPeriod")):
        raise InvalidContainerConfig("HostConfig.NanoCpus: conflicting options: Nano CPUs and CPU Period/Quota")
    if nano:
        cpu["quota"], cpu["period"] = nano * CPU_PERIOD_USEC // 1_000_000_000, CPU_PERIOD_USEC
    if host.get("CpuQuota"):
        cpu["quota"] = int(host["CpuQuota"])
    if host.get("CpuPeriod"):
        cpu["period"] = int(host["CpuPeriod"])
    if host.get("CpuShares"):
        cpu["shares"] = int(host["CpuShares"])
    if host.get("CpusetCpus"):
        cpu["cpus"] = str(host["CpusetCpus"])
    if host.get("CpusetMems"):
        cpu["mems"] = str(host["CpusetMems"])
    if cpu:
        out["cpu"] = cpu
    if host.get("PidsLimit"):
        out["pids"] = {"limit": int(host["PidsLimit"])}
    if host.get("BlkioWeight"):
        out["blockIO"] = {"weight": int(host["BlkioWeight"])}
    return out


def _mounts(host: dict[str, Any], etc_files: dict[str, str], privileged: bool) -> list[dict[str, Any]]:
    ro = [] if privileged else ["ro"]
    shm = int(host.get("ShmSize") or 64 << 20)
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", *ro]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", *ro]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={shm}"]},
    ]
    for dest, source in sorted(etc_files.items()):
        mounts.append({"destination": dest, "type": "bind", "source": source, "options": ["rbind", "rprivate"]})
    for i, bind in enumerate(host.get("Binds") or []):
        mounts.append(_bind(bind, f"HostConfig.Binds[{i}]"))
    for dest, opts in (host.get("Tmpfs") or {}).items():
        if not dest.startswith("/"):
            raise InvalidContainerConfig(f"HostConfig.Tmpfs: {dest!r} is not an absolute path")
        mounts.append({"destination": dest, "type": "tmpfs", "source": "tmpfs",
                       "options": ["nosuid", "nodev", "noexec", *[o for o in opts.split(",") if o]]})
    return mounts


def _bind(spec: str, where: str) -> dict[str, Any]:
    """"/host:/ctr[:ro|rw]" (a named volume is resolved to its directory by the Engine first)."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
        raise InvalidContainerConfig(f"{where}: invalid bind {spec!r} (use /host/path:/container/path[:ro])")
    mode = parts[2].split(",") if len(parts) == 3 else []
    bad = [m for m in mode if m not in ("ro", "rw", "z", "Z", "rprivate", "private", "rslave", "slave", "rshared", "shared")]
    if bad:
        raise InvalidContainerConfig(f"{where}: invalid mode {','.join(bad)!r} in {spec!r}")
    return {"destination": parts[1], "type": "bind", "source": parts[0],
            "options": ["rbind", "ro" if "ro" in mode else "rw"]}


def _environment(image_env: Any, user_env: Any, hostname: str) -> list[str]:
    env: dict[str, str] = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname}
    for where, items in (("image Env", image_env), ("Env", user_env)):
        for item in _strings(items, where) or []:
            key, sep, value = item.partition("=")
            if not key:
                raise InvalidContainerConfig(f"{where}: invalid entry {item!r}")
            if sep:
                env[key] = value
    return [f"{k}={v}" for k, v in env.items()]


def _capabilities(add: Any, drop: Any) -> list[str]:
    def norm(names: Any, where: str) -> list[str]:
        return [n.upper() if n.upper().startswith("CAP_") or n.upper() == "ALL" else "CAP_" + n.upper()
                for n in _strings(names, where) or []]
    caps = list(DOCKER_CAPABILITIES)
    dropped = norm(drop, "HostConfig.CapDrop")
    if "ALL" in dropped:
        caps = []
    caps = [c for c in caps if c not in dropped]
    for cap in norm(add, "HostConfig.CapAdd"):
        if cap != "ALL" and cap not in caps:
            caps.append(cap)
    return caps


def _strings(value: Any, where: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidContainerConfig(f"{where}: must be a list of strings")
    return value
