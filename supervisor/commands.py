"""The ``corral`` verbs that talk to the daemon: run, ps, stop, ... as docker prints them.

Each verb parses its flags, makes its RPC calls and prints. Exit codes are
Docker's: ``run`` and ``wait`` return the container's status; 125 when the
daemon or the request failed; 126/127 when the command cannot be invoked or
is not found.

A verb is a plain function on the blocking client (``blocking_client.py``),
unless it must read and write at once (attach, ``-it``, stats, cp): then it
is a coroutine on the anyio client, and ``_run_verb`` gives it one. Start-up
time is the point: the asyncio import alone costs more than most answers.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import sys
import time

from protocols.container_config import InvalidContainerConfig, healthcheck_from_flags, parse_bytes, parse_cpus
from protocols.detach import DEFAULT_DETACH_KEYS, DetachKeysError, parse_detach_keys
from protocols.units import human_duration

from .blocking_client import BlockingClient, ConnectionLost, RpcError
from .cli import bool_flag, verb_of
from .errors import CorralError

TYPE_CHECKING = False       # typing's, without importing typing (~3 ms of every command's start)
if TYPE_CHECKING:
    from typing import Any

DEFAULT_HOST = "unix:///run/corral/corral.sock"

# The verbs of the other *_cli modules: each module is imported only to parse
# and run one of its verbs (or for the whole --help). Start-up time counts.
_MODULE_OF_VERB = {
    "cp": "files_cli", "diff": "files_cli", "export": "files_cli", "save": "files_cli", "load": "files_cli",
    "build": "build_cli", "commit": "build_cli", "stats": "stats_cli", "attach": "attach_cli",
    "history": "images_cli", "system": "images_cli",
    "pull": "registry_cli", "push": "registry_cli", "search": "registry_cli", "login": "registry_cli",
    "logout": "registry_cli",
}
_CO_COROUTINE = 0x80        # inspect.CO_COROUTINE: iscoroutinefunction's test, without inspect's import


class _OneVerb:
    """The verbs' ``add_subparsers`` action, building only the parser of the verb being run.

    argparse builds every verb's parser (~14 ms, at each start) to parse one
    command line; the others get a ``_Discard``, which takes every call.
    """

    def __init__(self, sub: argparse._SubParsersAction, verb: str) -> None:
        self._sub, self._verb = sub, verb

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        if name == self._verb:
            return self._sub.add_parser(name, **kwargs)
        return _Discard()


class _Discard:
    def __getattr__(self, name: str) -> Any:
        return self._anything

    def _anything(self, *args: Any, **kwargs: Any) -> _Discard:
        return self


class _Formatter(argparse.HelpFormatter):
    """argparse's, as wide as the terminal without importing shutil for it: argparse
    makes one per add_argument (40 for run), and shutil is ~2 ms of each start."""

    def __init__(self, prog: str, **kwargs: Any) -> None:
        kwargs.setdefault("width", _columns() - 2)
        super().__init__(prog, **kwargs)


@functools.cache
def _columns() -> int:
    """shutil.get_terminal_size's columns: $COLUMNS, else the terminal's, else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


class _Parser(argparse.ArgumentParser):
    """The parsers of every verb (``add_subparsers`` makes its parsers of its parser's class)."""

    def __init__(self, *args: Any, formatter_class: type = _Formatter, **kwargs: Any) -> None:
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


def add_attach_flags(sp: argparse.ArgumentParser, *, sig_proxy: bool = True) -> None:
    sp.add_argument("--detach-keys", help=f"key sequence for detaching (default {DEFAULT_DETACH_KEYS!r})")
    if sig_proxy:
        sp.add_argument("--sig-proxy", type=bool_flag, nargs="?", const=True, default=True,
                        help="forward SIGINT/SIGTERM to the container (not with a terminal); default true")


def detach_keys_of(args: argparse.Namespace) -> bytes:
    """``--detach-keys`` (or docker's default) as bytes.

    Raises:
        DetachKeysError: not docker's syntax.
    """
    return parse_detach_keys(getattr(args, "detach_keys", None) or DEFAULT_DETACH_KEYS)


def terminal_size() -> tuple[int, int] | None:
    """Our terminal's (rows, cols), from stdout or stdin; None when neither is a terminal."""
    for fd in (1, 0):
        try:
            size = os.get_terminal_size(fd)
        except OSError:
            continue
        return size.lines, size.columns
    return None


def _parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; with ``verb`` (a known one), only that verb's subparser."""
    wanted = verb           # the loops below reuse the name
    p = _Parser(prog="corral", description="Talk to the corral daemon.")
    p.add_argument("-H", "--host", default=os.environ.get("CORRAL_HOST", DEFAULT_HOST),
                   help=f"daemon socket (default $CORRAL_HOST or {DEFAULT_HOST})")
    sub = p.add_subparsers(dest="verb", required=True)
    modules = _modules_for(verb)
    if verb is not None:
        sub = _OneVerb(sub, verb)
    for verb in ("run", "create"):
        sp = sub.add_parser(verb, help=f"{verb} a container")
        if verb == "run":
            sp.add_argument("-d", "--detach", action="store_true")
            sp.add_argument("--rm", action="store_true", help="remove the container when it exits")
            add_attach_flags(sp)
        sp.add_argument("-i", "--interactive", action="store_true", help="keep stdin open (and attach it)")
        sp.add_argument("-t", "--tty", action="store_true", help="give it a pseudo-terminal")
        sp.add_argument("--name")
        sp.add_argument("--cidfile")
        sp.add_argument("-e", "--env", action="append", default=[])
        sp.add_argument("--env-file", action="append", default=[])
        sp.add_argument("-w", "--workdir")
        sp.add_argument("-u", "--user")
        sp.add_argument("--hostname")
        sp.add_argument("--entrypoint")
        sp.add_argument("-m", "--memory")
        sp.add_argument("--memory-swap")
        sp.add_argument("--cpus")
        sp.add_argument("--cpu-shares", type=int)
        sp.add_argument("--cpuset-cpus")
        sp.add_argument("--pids-limit", type=int)
        sp.add_argument("--restart", default="no")
        sp.add_argument("--stop-signal")
        sp.add_argument("--stop-timeout", type=int)
        sp.add_argument("--privileged", action="store_true")
        sp.add_argument("-v", "--volume", action="append", default=[])
        sp.add_argument("--tmpfs", action="append", default=[])
        sp.add_argument("--read-only", action="store_true")
        sp.add_argument("-l", "--label", action="append", default=[])
        _health_and_init_args(sp)
        sp.add_argument("--log-driver", help="json-file (default) or none")
        sp.add_argument("--log-opt", action="append", default=[], help="max-size=10m, max-file=3 (json-file)")
        sp.add_argument("image")
        sp.add_argument("command", nargs=argparse.REMAINDER)
    sp = sub.add_parser("start")
    sp.add_argument("-a", "--attach", action="store_true", help="attach its output (and signals) until it stops")
    sp.add_argument("-i", "--interactive", action="store_true", help="attach its stdin too")
    add_attach_flags(sp, sig_proxy=False)
    sp.add_argument("containers", nargs="+")
    for verb in ("pause", "unpause"):
        sub.add_parser(verb).add_argument("containers", nargs="+")
    sp = sub.add_parser("inspect", help="low-level information on containers, images or volumes")
    sp.add_argument("--type", choices=[kind for kind, _, _ in _INSPECTED], help="only this kind of object")
    sp.add_argument("refs", nargs="+", metavar="NAME|ID")
    for verb in ("stop", "restart"):
        sp = sub.add_parser(verb)
        sp.add_argument("-t", "--time", type=float)
        sp.add_argument("containers", nargs="+")
    sp = sub.add_parser("kill")
    sp.add_argument("-s", "--signal", default="SIGKILL")
    sp.add_argument("containers", nargs="+")
    sp = sub.add_parser("rm")
    sp.add_argument("-f", "--force", action="store_true")
    sp.add_argument("-v", "--volumes", action="store_true", help="remove the container's anonymous volumes too")
    sp.add_argument("containers", nargs="+")
    sub.add_parser("wait").add_argument("containers", nargs="+")
    _exec_args(sub.add_parser("exec", help="run a command in a running container"))
    sp = sub.add_parser("logs", help="print a container's output")
    sp.add_argument("-f", "--follow", action="store_true", help="go on until the container stops")
    sp.add_argument("-t", "--timestamps", action="store_true")
    sp.add_argument("-n", "--tail", default="all", help="the last N lines (default all)")
    sp.add_argument("--since", help="from this time: RFC 3339, Unix seconds, or a duration ago (10m, 1h30m)")
    sp.add_argument("--until", help="up to this time, same forms as --since")
    sp.add_argument("container")
    sp = sub.add_parser("rename")
    sp.add_argument("container")
    sp.add_argument("new_name")
    sp = sub.add_parser("ps")
    sp.add_argument("-a", "--all", action="store_true")
    sp.add_argument("-q", "--quiet", action="store_true")
    sp.add_argument("--no-trunc", action="store_true")
    sp.add_argument("-f", "--filter", action="append", default=[],
                    help="key=value: status, name, label, id, ancestor, exited, volume")
    sp.add_argument("-n", "--last", type=int, default=0, help="the n last created containers (any state)")
    sp.add_argument("-l", "--latest", action="store_true", help="the last created container (any state)")
    sp.add_argument("--format", choices=("table", "json"), default="table")
    sp = sub.add_parser("top")
    sp.add_argument("container")
    sp.add_argument("ps_args", nargs=argparse.REMAINDER, help="ps options (default -ef)")
    sp = sub.add_parser("container")
    csub = sp.add_subparsers(dest="container_verb", required=True)
    cp = csub.add_parser("prune", help="remove every stopped container")
    cp.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    cp.add_argument("--filter", action="append", default=[], help="label=KEY[=VALUE], label!=KEY[=VALUE]")
    for verb in ("info", "version"):
        sub.add_parser(verb).add_argument("--format", choices=("text", "json"), default="text")
    sp = sub.add_parser("volume")
    vsub = sp.add_subparsers(dest="volume_verb", required=True)
    vp = vsub.add_parser("create")
    vp.add_argument("name", nargs="?")
    vp.add_argument("-d", "--driver", default="local")
    vp.add_argument("--label", action="append", default=[])
    vp.add_argument("-o", "--opt", action="append", default=[])
    vp = vsub.add_parser("ls")
    vp.add_argument("-q", "--quiet", action="store_true")
    vp.add_argument("-f", "--filter", action="append", default=[], help="key=value: name, label, dangling, driver")
    vp.add_argument("--format", choices=("table", "json"), default="table")
    vp = vsub.add_parser("rm")
    vp.add_argument("-f", "--force", action="store_true")
    vp.add_argument("volumes", nargs="+")
    vsub.add_parser("inspect").add_argument("volumes", nargs="+")
    # The image verbs exist twice, as in docker: `images`/`image ls`, `rmi`/`image rm`, ...
    _images_args(sub.add_parser("images", help="list images"))
    _rmi_args(sub.add_parser("rmi", help="remove images"))
    _tag_args(sub.add_parser("tag", help="tag an image"))
    _import_args(sub.add_parser("import", help="import a root filesystem tar or directory as an image"))
    sp = sub.add_parser("image")
    isub = sp.add_subparsers(dest="image_verb", required=True)
    isub.add_parser("bootstrap").add_argument("name", choices=("busybox",))
    isub.add_parser("inspect").add_argument("images", nargs="+")
    _images_args(isub.add_parser("ls"))
    _rmi_args(isub.add_parser("rm"))
    _tag_args(isub.add_parser("tag"))
    _import_args(isub.add_parser("import"))
    if wanted in (None, "image"):
        _import_cli("images_cli").add_image_parsers(isub)     # image history, image prune
    for verb in ("up", "down"):
        sp = sub.add_parser(verb, help=f"{'start' if verb == 'up' else 'remove'} a services file's containers")
        sp.add_argument("-f", "--file", default="compose.yaml")
        sp.add_argument("-p", "--project-name")
        if verb == "up":
            sp.add_argument("-d", "--detach", action="store_true", help="accepted: the daemon supervises them")
    sp = sub.add_parser("events")
    sp.add_argument("--since", type=int, help="resume after this event seq")
    sp.add_argument("--until", type=int, help="stop at this event seq")
    sp.add_argument("-f", "--filter", action="append", default=[], help="key=value (type, event, container, label, image)")
    sp.add_argument("--format", choices=("text", "json"), default="text")
    for module in modules:
        module.add_parsers(sub)
    return p


def _modules_for(verb: str | None) -> list[Any]:
    """The *_cli modules whose parsers ``_parser(verb)`` needs: the verb's own, or all of them."""
    if verb is None:
        names = sorted(set(_MODULE_OF_VERB.values()))
    else:
        names = [_MODULE_OF_VERB[verb]] if verb in _MODULE_OF_VERB else []
    return [_import_cli(name) for name in names]


def _import_cli(name: str) -> Any:
    return importlib.import_module(f"{__package__}.{name}")


def _verb(name: str):
    if name in _VERBS:
        return _VERBS[name]
    return _modules_for(name)[0].VERBS[name]


def _health_and_init_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--init", action="store_true", help="run tini as PID 1: it forwards signals and reaps zombies")
    sp.add_argument("--health-cmd", help="command run to check health (CMD-SHELL)")
    sp.add_argument("--health-interval", help="time between checks (ms|s|m|h), default 30s")
    sp.add_argument("--health-timeout", help="a check running longer fails (ms|s|m|h), default 30s")
    sp.add_argument("--health-retries", type=int, help="failures in a row that make it unhealthy, default 3")
    sp.add_argument("--health-start-period", help="failures in this time after start do not count (ms|s|m|h)")
    sp.add_argument("--health-start-interval", help="time between checks during the start period (ms|s|m|h)")
    sp.add_argument("--no-healthcheck", action="store_true", help="disable the image's HEALTHCHECK")


def _exec_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("-d", "--detach", action="store_true", help="run it in the background")
    sp.add_argument("-i", "--interactive", action="store_true", help="attach our stdin to it")
    sp.add_argument("-t", "--tty", action="store_true", help="give it a pseudo-terminal")
    add_attach_flags(sp, sig_proxy=False)
    sp.add_argument("-e", "--env", action="append", default=[], help="KEY=value (repeatable)")
    sp.add_argument("--env-file", action="append", default=[])
    sp.add_argument("-u", "--user", help="name|uid[:group|gid]")
    sp.add_argument("-w", "--workdir", help="working directory inside the container")
    sp.add_argument("--privileged", action="store_true", help="every capability the daemon holds")
    sp.add_argument("container")
    sp.add_argument("command", nargs=argparse.REMAINDER)


def _images_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("-a", "--all", action="store_true", help="accepted: corral has no intermediate images")
    sp.add_argument("-q", "--quiet", action="store_true", help="only image ids")
    sp.add_argument("--digests", action="store_true", help="show the registry digests")
    sp.add_argument("-f", "--filter", action="append", default=[],
                    help="dangling=true|false, label=KEY[=VALUE], reference=PATTERN")
    sp.add_argument("--no-trunc", action="store_true")
    sp.add_argument("--format", choices=("table", "json"), default="table")


def _rmi_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("-f", "--force", action="store_true", help="untag even if a container uses it")
    sp.add_argument("--no-prune", action="store_true", help="keep the untagged parents (build's intermediate images)")
    sp.add_argument("images", nargs="+")


def _tag_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
    sp.add_argument("target", metavar="TARGET_IMAGE[:TAG]")


def _import_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("-c", "--change", action="append", default=[],
                    help="a Dockerfile instruction: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, "
                         "VOLUME, WORKDIR")
    sp.add_argument("-m", "--message", default="", help="the commit message of the imported image")
    sp.add_argument("source", metavar="file|dir|-", help="a tar (plain or compressed), a directory, or - for stdin")
    sp.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]")


def main(argv: list[str]) -> int:
    verb = verb_of(argv)
    args = _parser(verb if verb in _VERBS or verb in _MODULE_OF_VERB else None).parse_args(argv)
    try:
        return _run_verb(_verb(args.verb), None, args)
    except (CorralError, InvalidContainerConfig) as exc:      # RpcError is a CorralError
        print(f"corral: {exc}", file=sys.stderr)
        return 125
    except DetachKeysError as exc:
        print(f"corral: invalid --detach-keys: {exc}", file=sys.stderr)
        return 125
    except (OSError, ConnectionLost) as exc:
        print(f"corral: cannot talk to the daemon at {args.host}: {exc}", file=sys.stderr)
        return 125
    except KeyboardInterrupt:          # ^C ends logs -f, events, a pull: no traceback
        return 130


def _run_verb(verb, client: BlockingClient | None, args: argparse.Namespace, *extra: Any) -> Any:
    """Run a verb: a plain function gets the blocking client (``blocking_client.py``; made if
    ``client`` is None), a coroutine function the anyio client (``client.py``) on a connection of
    its own: the verbs that read and write at once (attach, ``-it``, ``stats``, cp)."""
    if verb.__code__.co_flags & _CO_COROUTINE:
        return _with_async_client(args, verb, *extra)
    if client is not None:
        return verb(client, args, *extra)
    with BlockingClient(args.host.removeprefix("unix://")) as client:
        return verb(client, args, *extra)


def _with_async_client(args: argparse.Namespace, verb, *extra: Any) -> Any:
    import anyio

    from .client import connect

    async def run() -> Any:
        async with connect(args.host.removeprefix("unix://")) as client:
            return await verb(client, args, *extra)
    return anyio.run(run)      # asyncio: the CLI need not import trio


def create_body(args: argparse.Namespace) -> dict[str, Any]:
    """The flags as Docker's create body (what `docker run` sends; see docs)."""
    env = list(args.env)
    for path in args.env_file:
        with open(path) as f:
            env += [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    binds, volumes, tmpfs = [], {}, {}
    for v in args.volume:
        # docker's split: "-v /ctr/path" alone asks for an anonymous volume (Config.Volumes);
        # anything with a source ("/host:/ctr", "name:/ctr") is a bind.
        # "./dir:/ctr" is made absolute here, as the docker 23+ CLI does; the API
        # would read "./dir" as a (bad) volume name.
        source, sep, rest = v.partition(":")
        if not sep and v.startswith("/"):
            volumes[v] = {}
        elif source in (".", "..") or source.startswith(("./", "../")):
            binds.append(os.path.abspath(source) + sep + rest)
        else:
            binds.append(v)
    for t in args.tmpfs:
        dest, _, opts = t.partition(":")
        tmpfs[dest] = opts
    host: dict[str, Any] = {
        "Binds": binds or None, "Tmpfs": tmpfs or None, "Privileged": args.privileged,
        "ReadonlyRootfs": args.read_only, "AutoRemove": bool(getattr(args, "rm", False)),
        "RestartPolicy": _restart(args.restart),
        "Memory": parse_bytes(args.memory, field="memory") if args.memory else 0,
        "MemorySwap": (-1 if args.memory_swap == "-1" else parse_bytes(args.memory_swap, field="memory-swap"))
        if args.memory_swap else 0,
        "NanoCpus": parse_cpus(args.cpus) if args.cpus else 0,
        "CpuShares": args.cpu_shares or 0, "CpusetCpus": args.cpuset_cpus or "",
        "PidsLimit": args.pids_limit or 0,
    }
    body: dict[str, Any] = {
        "Image": args.image, "Cmd": args.command or None, "Env": env or None,
        "Entrypoint": [args.entrypoint] if args.entrypoint else None, "WorkingDir": args.workdir or "",
        "User": args.user or "", "Hostname": args.hostname or "",
        "Labels": dict(label.partition("=")[::2] for label in args.label),
        "HostConfig": host,
    }
    if volumes:
        body["Volumes"] = volumes
    if args.stop_signal:
        body["StopSignal"] = args.stop_signal
    if args.log_driver or args.log_opt:
        opts = {}
        for opt in args.log_opt:
            key, sep, value = opt.partition("=")
            if not sep or not key:
                raise InvalidContainerConfig(f"invalid log opt {opt!r}: expected key=value")
            opts[key] = value
        host["LogConfig"] = {"Type": args.log_driver or "json-file", "Config": opts}
    if args.stop_timeout is not None:
        body["StopTimeout"] = args.stop_timeout
    healthcheck = healthcheck_from_flags(
        cmd=args.health_cmd, interval=args.health_interval, timeout=args.health_timeout, retries=args.health_retries,
        start_period=args.health_start_period, start_interval=args.health_start_interval, disable=args.no_healthcheck)
    if healthcheck is not None:
        body["Healthcheck"] = healthcheck
    if args.init:
        host["Init"] = True
    # -i/-t as docker run sets them: stdin closes with ours only when we attach it (run, not -d).
    attached = args.verb == "run" and not args.detach
    body.update(Tty=args.tty, OpenStdin=args.interactive, StdinOnce=args.interactive and attached,
                AttachStdin=args.interactive and attached, AttachStdout=attached, AttachStderr=attached)
    size = terminal_size() if args.tty else None
    if size is not None:
        host["ConsoleSize"] = list(size)
    return body


def exec_body(args: argparse.Namespace) -> dict[str, Any]:
    """`corral exec` flags as Docker's exec create body (what `docker exec` sends)."""
    if not args.command:
        raise InvalidContainerConfig("exec: no command given (corral exec CONTAINER COMMAND [ARG...])")
    env = list(args.env)
    for path in args.env_file:
        with open(path) as f:
            env += [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    body = {"User": args.user or "", "Privileged": args.privileged, "Tty": args.tty,
            "AttachStdin": args.interactive and not args.detach,
            "AttachStdout": not args.detach, "AttachStderr": not args.detach, "Detach": args.detach,
            "DetachKeys": args.detach_keys or "", "Env": env or None, "WorkingDir": args.workdir or "",
            "Cmd": list(args.command)}
    size = terminal_size() if args.tty else None
    if size is not None:
        body["ConsoleSize"] = list(size)
    return body


def cmd_exec(client, args) -> int:
    """docker exec: the command's output on ours, its exit status as ours (126/127 when it cannot start)."""
    keys = detach_keys_of(args)
    created = client.call("exec.create", id=args.container, body=exec_body(args))
    code = 0
    try:
        if (args.interactive or args.tty) and not args.detach:
            detached, code = _run_verb(_exec_attached, client, args, created["Id"], keys)
            if detached:
                from .attach_cli import say_detached
                say_detached()
                return 0
            return code
        for item in client.stream("exec.start", id=created["Id"], detach=args.detach):
            if "data" in item:
                out = sys.stdout if item["stream"] == "stdout" else sys.stderr
                out.buffer.write(item["data"])
                out.flush()
            elif "ExitCode" in item:
                code = int(item["ExitCode"])
    except RpcError as exc:
        if exc.details.get("exit_code") in (126, 127):
            print(f"corral: {exc.message}", file=sys.stderr)
            return exc.details["exit_code"]
        raise
    return code


async def _exec_attached(client, args, exec_id: str, keys: bytes) -> tuple[bool, int]:
    from .attach_cli import attach_exec
    return await attach_exec(client, exec_id, tty=args.tty, stdin=args.interactive, detach_keys=keys)


def _restart(text: str) -> dict[str, Any]:
    name, _, count = text.partition(":")
    return {"Name": name, "MaximumRetryCount": int(count) if count.isdigit() else 0}


def _create(client, args) -> str:
    created = client.call("container.create", body=create_body(args), name=args.name)
    if args.cidfile:
        with open(args.cidfile, "x") as f:          # Docker refuses an existing cidfile
            f.write(created["Id"])
    return created["Id"]


def cmd_create(client, args) -> int:
    print(_create(client, args))
    return 0


def cmd_run(client, args) -> int:
    # --rm in the foreground is done here, after the output is read (the old
    # docker client's way); detached, the daemon removes it (AutoRemove).
    remove_after = args.rm and not args.detach
    if remove_after:
        args.rm = False
    keys = detach_keys_of(args)
    cid = _create(client, args)
    try:
        if (args.interactive or args.tty) and not args.detach:
            # Attached before the start, so nothing it writes first is missed (attach.py rule 2).
            try:
                detached = _run_verb(_run_attached, client, args, cid, keys)
            except RpcError as exc:
                if exc.code == "NOT_FOUND" or exc.details.get("exit_code") is None:
                    raise
                print(f"corral: {exc.message}", file=sys.stderr)
                return exc.details["exit_code"] if exc.details["exit_code"] in (126, 127) else 125
            if detached:
                from .attach_cli import say_detached
                say_detached()
                remove_after = False                 # it runs on; docker leaves it to --rm's AutoRemove
                return 0
            return int(client.call("container.wait", id=cid)["StatusCode"])
        try:
            client.call("container.start", id=cid)
        except RpcError as exc:
            print(f"corral: {exc.message}", file=sys.stderr)
            # Docker's codes: 126/127 when the command is the cause, else 125.
            return exc.details.get("exit_code") if exc.details.get("exit_code") in (126, 127) else 125
        if args.detach:
            print(cid)
            return 0
        if args.log_driver != "none":
            # The container's output, from its log: everything since it started, until it stops.
            _print_logs(client, cid, follow=True)
        result = client.call("container.wait", id=cid)
        return int(result["StatusCode"])
    finally:
        if remove_after:
            client.call("container.remove", id=cid, force=True, volumes=True)


async def _run_attached(client, args, cid: str, keys: bytes) -> bool:
    from .attach_cli import attach_container
    return await attach_container(client, cid, stdin=args.interactive, detach_keys=keys,
                                             sig_proxy=args.sig_proxy,
                                             on_attached=lambda: client.call("container.start", id=cid))


def _print_logs(client, ref: str, **params) -> None:
    """Stream ``container.logs``: stdout entries to our stdout, stderr ones to our stderr."""
    out, err = sys.stdout.buffer, sys.stderr.buffer
    for batch in client.stream("container.logs", id=ref, **params):
        for stream, text in batch:
            (out if stream == "stdout" else err).write(text)
        out.flush()
        err.flush()


def cmd_logs(client, args) -> int:
    """docker logs: -f follows until the container stops; times as Docker reads them."""
    params: dict[str, Any] = {"follow": args.follow, "timestamps": args.timestamps, "tail": args.tail}
    now = time.time_ns()
    for name in ("since", "until"):
        value = getattr(args, name)
        if value:
            from protocols.jsonlog import format_unix, parse_timestamp   # ~15 ms: only for --since/--until

            try:
                params[name] = format_unix(parse_timestamp(value, now_ns=now))
            except ValueError as exc:
                print(f"corral: invalid value for --{name}: {exc}", file=sys.stderr)
                return 125
    if args.tail != "all" and not args.tail.lstrip("-").isdecimal():
        print(f"corral: invalid value for --tail: {args.tail!r} (a number or \"all\")", file=sys.stderr)
        return 125
    _print_logs(client, args.container, **params)
    return 0


def _each(client, args, method: str, **params) -> int:
    code = 0
    for ref in args.containers:
        try:
            client.call(method, id=ref, **params)
            print(ref)
        except RpcError as exc:
            print(f"corral: {exc.message}", file=sys.stderr)
            code = 1
    return code


def cmd_start(client, args) -> int:
    """docker start; with -a (one container) attached until it stops, exiting with its status."""
    if not args.attach and not args.interactive:
        return _each(client, args, "container.start")
    if len(args.containers) != 1:
        print("corral: you cannot start and attach multiple containers at once", file=sys.stderr)
        return 1
    keys = detach_keys_of(args)
    ref = args.containers[0]
    running = client.call("container.inspect", id=ref)["State"]["Running"]
    if running:
        client.call("container.start", id=ref)        # 304: already running; attach to it as docker does
    if _run_verb(_start_attached, client, args, ref, keys, not running):
        from .attach_cli import say_detached
        say_detached()
        return 0
    return int(client.call("container.wait", id=ref)["StatusCode"])


async def _start_attached(client, args, ref: str, keys: bytes, start: bool) -> bool:
    async def on_attached() -> None:
        await client.call("container.start", id=ref)
    from .attach_cli import attach_container
    return await attach_container(client, ref, stdin=args.interactive, detach_keys=keys, sig_proxy=True,
                                             on_attached=on_attached if start else None)


def cmd_stop(client, args) -> int:
    return _each(client, args, "container.stop", timeout=args.time)


def cmd_restart(client, args) -> int:
    return _each(client, args, "container.restart", timeout=args.time)


def cmd_kill(client, args) -> int:
    return _each(client, args, "container.kill", signal=args.signal)


def cmd_rm(client, args) -> int:
    return _each(client, args, "container.remove", force=args.force, volumes=args.volumes)


def cmd_pause(client, args) -> int:
    return _each(client, args, "container.pause")


def cmd_unpause(client, args) -> int:
    return _each(client, args, "container.unpause")


def cmd_wait(client, args) -> int:
    """Prints each container's status; exits 0 (docker wait)."""
    for ref in args.containers:
        result = client.call("container.wait", id=ref)
        print(result["StatusCode"])
    return 0


def cmd_rename(client, args) -> int:
    client.call("container.rename", id=args.container, name=args.new_name)
    return 0


# What `inspect` looks a name up as, in docker's order: (kind, method, its parameter).
_INSPECTED = (("container", "container.inspect", "id"), ("image", "image.inspect", "id"),
              ("volume", "volume.inspect", "name"))


def cmd_inspect(client, args) -> int:
    """docker inspect: each name as a container, else an image, else a volume (``--type``: that
    kind only); one JSON array of what was found, a miss is an error line and exit 1."""
    kinds = [k for k in _INSPECTED if args.type in (None, k[0])]
    code, out = 0, []
    for ref in args.refs:
        for kind, method, param in kinds:
            try:
                out.append(client.call(method, **{param: ref}))
                break
            except RpcError as exc:
                if exc.code != "NOT_FOUND" or args.type is not None:
                    print(f"corral: {exc.message}", file=sys.stderr)
                    code = 1
                    break
        else:
            print(f"corral: no such object: {ref}", file=sys.stderr)
            code = 1
    _print_json(out, indent=4)
    return code


def _inspect_all(client, method: str, param: str, refs: list[str]) -> int:
    """docker inspect's shape: one JSON array of what was found; a miss is an error line and exit 1."""
    code, out = 0, []
    for ref in refs:
        try:
            out.append(client.call(method, **{param: ref}))
        except RpcError as exc:
            print(f"corral: {exc.message}", file=sys.stderr)
            code = 1
    _print_json(out, indent=4)
    return code


def _filters(pairs: list[str]) -> dict[str, list[str]]:
    """Repeated ``--filter key=value`` -> Docker's filter object (values of one key collect)."""
    filters: dict[str, list[str]] = {}
    for f in pairs:
        key, sep, value = f.partition("=")
        if not sep or not key:
            raise InvalidContainerConfig(f"bad format of filter (expected name=value): {f!r}")
        filters.setdefault(key, []).append(value)
    return filters


def cmd_ps(client, args) -> int:
    rows = client.call("container.list", all=args.all, filters=_filters(args.filter),
                             limit=1 if args.latest else args.last)
    if args.quiet:
        for r in rows:
            print(r["Id"] if args.no_trunc else r["Id"][:12])
        return 0
    if args.format == "json":
        for r in rows:
            _print_json(r)
        return 0
    table = [("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES")]
    now = time.time()
    for r in rows:
        command = r["Command"] if args.no_trunc else _trunc(r["Command"], 20)
        table.append((r["Id"] if args.no_trunc else r["Id"][:12], r["Image"], f'"{command}"',
                      _ago(now - r["Created"]), r["Status"], "", ",".join(n.lstrip("/") for n in r["Names"])))
    _print_table(table)
    return 0


def cmd_top(client, args) -> int:
    """docker top: ps's columns for the container's processes (host PIDs), and CPID, the PID inside it."""
    top = client.call("container.top", id=args.container, ps_args=" ".join(args.ps_args) or "-ef")
    _print_table([tuple(top["Titles"])] + [tuple(p) for p in top["Processes"]], minwidth=20)
    return 0


def cmd_container(client, args) -> int:
    # Only prune for now; the other `container X` verbs are the top-level ones.
    if not args.force and not _confirm("WARNING! This will remove all stopped containers.\n"
                                       "Are you sure you want to continue? [y/N] "):
        return 0
    report = client.call("container.prune", filters=_filters(args.filter))
    if report["ContainersDeleted"]:
        print("Deleted Containers:")
        for cid in report["ContainersDeleted"]:
            print(cid)
        print()
    print(f"Total reclaimed space: {_size(report['SpaceReclaimed'], precision=4)}")
    return 0


def _confirm(question: str) -> bool:
    """docker's prompt: only "y" or "yes" (any case) proceeds; no input is a no."""
    print(question, end="", flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def _client_version() -> dict[str, Any]:
    from .version import API_VERSION, go_arch, server_version
    return {"Version": server_version(), "ApiVersion": API_VERSION,
            "PythonVersion": "{}.{}.{}".format(*sys.version_info[:3]), "Os": "linux",
            "Arch": go_arch(os.uname().machine)}


def cmd_version(client, args) -> int:
    client_side = _client_version()
    server = client.call("system.version")
    if args.format == "json":
        _print_json({"Client": client_side, "Server": server})
        return 0
    _print_fields([
        ("Client:", None),
        (" Version:", client_side["Version"]), (" API version:", client_side["ApiVersion"]),
        (" Python version:", client_side["PythonVersion"]),
        (" OS/Arch:", f"{client_side['Os']}/{client_side['Arch']}"),
        ("", None),
        (f"Server: {server['Platform']['Name']}", None),
        (" Engine:", None),
        ("  Version:", server["Version"]),
        ("  API version:", f"{server['ApiVersion']} (minimum version {server['MinAPIVersion']})"),
        ("  Python version:", server["PythonVersion"]),
        ("  OS/Arch:", f"{server['Os']}/{server['Arch']}"),
        ("  Kernel:", server["KernelVersion"]),
    ])
    return 0


def cmd_info(client, args) -> int:
    info = client.call("system.info")
    if args.format == "json":
        _print_json(info)
        return 0
    lines = [
        "Server:",
        f" Containers: {info['Containers']}",
        f"  Running: {info['ContainersRunning']}",
        f"  Paused: {info['ContainersPaused']}",
        f"  Stopped: {info['ContainersStopped']}",
        f" Images: {info['Images']}",
        f" Server Version: {info['ServerVersion']}",
        f" Storage Driver: {info['Driver']}",
        f" Cgroup Driver: {info['CgroupDriver']}",
        f" Cgroup Version: {info['CgroupVersion']}",
        f" Kernel Version: {info['KernelVersion']}",
        f" Operating System: {info['OperatingSystem']}",
        f" OSType: {info['OSType']}",
        f" Architecture: {info['Architecture']}",
        f" CPUs: {info['NCPU']}",
        f" Total Memory: {_binary_size(info['MemTotal'])}",
        f" Name: {info['Name']}",
        f" ID: {info['ID']}",
        f" Docker Root Dir: {info['DockerRootDir']}",
        f" Live Restore Enabled: {str(info.get('LiveRestoreEnabled', False)).lower()}",
    ]
    print("\n".join(lines))
    return 0


def _print_fields(rows: list[tuple[str, str | None]]) -> None:
    """docker version's layout: labels padded to one column, headings alone on their line."""
    width = max(len(label) for label, value in rows if value is not None) + 1
    for label, value in rows:
        print(label if value is None else f"{label.ljust(width)}{value}")


def cmd_volume(client, args) -> int:
    verb = args.volume_verb
    if verb == "create":
        opts = dict(o.partition("=")[::2] for o in args.opt)
        volume = client.call("volume.create", name=args.name, driver=args.driver,
                                   labels=dict(label.partition("=")[::2] for label in args.label),
                                   driver_opts=opts or None)
        print(volume["Name"])
        return 0
    if verb == "ls":
        volumes = client.call("volume.list", filters=_filters(args.filter))["Volumes"]
        if args.quiet:
            for v in volumes:
                print(v["Name"])
        elif args.format == "json":
            for v in volumes:
                _print_json(v)
        else:
            _print_table([("DRIVER", "VOLUME NAME")] + [(v["Driver"], v["Name"]) for v in volumes])
        return 0
    if verb == "inspect":
        return _inspect_all(client, "volume.inspect", "name", args.volumes)
    code = 0                                   # rm
    for name in args.volumes:
        try:
            client.call("volume.remove", name=name, force=args.force)
            print(name)
        except RpcError as exc:
            print(f"corral: {exc.message}", file=sys.stderr)
            code = 1
    return code


def cmd_images(client, args) -> int:
    filters = _filters(args.filter)
    rows = client.call("image.list", all=args.all, filters=filters)
    if args.format == "json":
        for r in rows:
            _print_json(r)
        return 0

    def image_id(r: dict[str, Any]) -> str:
        # docker: "sha256:<64 hex>" with --no-trunc, else the first 12 hex digits.
        return r["Id"] if args.no_trunc else r["Id"].removeprefix("sha256:")[:12]

    if args.quiet:
        # As docker: one line per REPOSITORY:TAG row, so a twice-tagged image shows twice.
        for r in rows:
            for _ in r["RepoTags"] or [None]:
                print(image_id(r))
        return 0
    table = [("REPOSITORY", "TAG", *(("DIGEST",) if args.digests else ()), "IMAGE ID", "CREATED", "SIZE")]
    for r in rows:
        digests = {d.partition("@")[0]: d.partition("@")[2] for d in r.get("RepoDigests") or []}
        for tag in r["RepoTags"] or ["<none>:<none>"]:
            repo, _, t = tag.rpartition(":")
            digest = (digests.get(repo, "<none>"),) if args.digests else ()
            table.append((repo, t, *digest, image_id(r), _ago(time.time() - _epoch(r["Created"])), _size(r["Size"])))
    _print_table(table)
    return 0


def cmd_rmi(client, args) -> int:
    """docker rmi: each image in turn; "Untagged:"/"Deleted:" lines; exit 1 if any failed."""
    code = 0
    for ref in args.images:
        try:
            for record in client.call("image.remove", id=ref, force=args.force, noprune=args.no_prune):
                for what, name in record.items():
                    print(f"{what}: {name}")
        except RpcError as exc:
            print(f"corral: {exc.message}", file=sys.stderr)
            code = 1
    return code


def cmd_tag(client, args) -> int:
    client.call("image.tag", source=args.source, reference=args.target)
    return 0


def cmd_import(client, args) -> int:
    """docker import: prints the new image's id.

    The daemon reads the tar from a path on this host (the RPC's frames are capped
    at 1 MiB); stdin is first spooled to a temp file it can read, removed after.
    """
    if args.source.startswith(("http://", "https://")):
        print("corral: import from a URL is not supported; download it and import the file", file=sys.stderr)
        return 125
    spooled = None
    if args.source == "-":
        spooled = _spool_stdin()
        source = spooled
    else:
        source = os.path.abspath(args.source)
    try:
        image = client.call("image.import", source=source, reference=args.reference, changes=args.change,
                                  message=args.message or f"Imported from {args.source}")
    finally:
        if spooled is not None:
            os.unlink(spooled)
    print(image["Id"])
    return 0


def _spool_stdin() -> str:
    """Copy stdin to a new temp file ($TMPDIR or /tmp, mode 0600: only root reads it too); its path.

    A daemon run with a private /tmp (systemd PrivateTmp) cannot see it: set TMPDIR
    to a directory both share.
    """
    import shutil
    import tempfile

    fd, path = tempfile.mkstemp(prefix="corral-import-", suffix=".tar")
    try:
        with os.fdopen(fd, "wb") as f:
            shutil.copyfileobj(sys.stdin.buffer, f, 1 << 20)
    except BaseException:
        os.unlink(path)
        raise
    return path


def cmd_image(client, args) -> int:
    verb = args.image_verb
    if verb == "inspect":
        return _inspect_all(client, "image.inspect", "id", args.images)
    if verb in _IMAGE_VERBS:
        return _run_verb(_IMAGE_VERBS[verb], client, args)
    if verb in ("history", "prune"):
        return _run_verb(_import_cli("images_cli").IMAGE_VERBS[verb], client, args)
    image = client.call("image.bootstrap", name=args.name)
    print(image["Id"])
    return 0


def cmd_events(client, args) -> int:
    filters = _filters(args.filter)
    for e in client.stream("system.events", filters=filters, since=args.since, until=args.until):
        if args.format == "json":
            _print_json(e, flush=True)
        else:
            attrs = ", ".join(f"{k}={v}" for k, v in sorted(e["attributes"].items()))
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(e["time_ns"] / 1e9))
            print(f"{stamp}.{e['time_ns'] % 1_000_000_000:09d} {e['type']} {e['action']} {e['id']} ({attrs})",
                  flush=True)
    return 0


def cmd_up(client, args) -> int:
    return _compose(client, args, "compose.up")


def cmd_down(client, args) -> int:
    return _compose(client, args, "compose.down")


def _compose(client, args, method: str) -> int:
    from pathlib import Path

    from .services import read_project

    kwargs = read_project(Path(args.file), dict(os.environ))
    result = client.call(method, project=args.project_name, **kwargs)
    for warning in result.get("warnings", []):
        print(f"WARN: {warning}", file=sys.stderr)
    for action in result["actions"]:
        print(f"{result['project']}: {action}")
    return 0


def _print_json(value: Any, *, indent: int | None = None, flush: bool = False) -> None:
    import json             # only for output that asks for it: ~1.5 ms of every start otherwise

    print(json.dumps(value, indent=indent), flush=flush)


def _print_table(rows: list[tuple[str, ...]], *, minwidth: int = 10) -> None:
    """Columns as docker's Go tabwriter aligns them: each cell padded to max(minwidth,
    longest + 3); the last column is not padded. Listings use minwidth 10, top 20."""
    columns = max(len(r) for r in rows)
    widths = [max([minwidth] + [len(r[i]) + 3 for r in rows if len(r) > i]) for i in range(columns)]
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r[:-1], widths)] + [r[-1]]
        print("".join(cells).rstrip())


def _trunc(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _ago(seconds: float) -> str:
    return f"{human_duration(int(seconds * 1e9))} ago"


def _epoch(created: Any) -> float:
    if isinstance(created, (int, float)):
        return float(created)
    try:
        return time.mktime(time.strptime(str(created)[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    except ValueError:
        return time.time()


def _size(n: float, *, precision: int = 3) -> str:
    """go-units HumanSizeWithPrecision: decimal units (images use 3 digits, prune 4)."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.{precision}g}{unit}"
        n /= 1000
    return f"{n:.{precision}g}TB"


def _binary_size(n: float) -> str:
    """go-units BytesSize: binary units, 4 digits ("15.51GiB"), as docker info prints memory."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.4g}{unit}"
        n /= 1024
    return f"{n:.4g}TiB"


_VERBS = {
    "run": cmd_run, "create": cmd_create, "start": cmd_start, "stop": cmd_stop, "restart": cmd_restart,
    "kill": cmd_kill, "rm": cmd_rm, "pause": cmd_pause, "unpause": cmd_unpause, "wait": cmd_wait,
    "rename": cmd_rename, "inspect": cmd_inspect, "ps": cmd_ps, "images": cmd_images, "image": cmd_image,
    "events": cmd_events, "up": cmd_up, "down": cmd_down, "top": cmd_top, "container": cmd_container,
    "info": cmd_info, "version": cmd_version, "volume": cmd_volume, "rmi": cmd_rmi, "tag": cmd_tag,
    "import": cmd_import, "exec": cmd_exec, "logs": cmd_logs,
}
_IMAGE_VERBS = {"ls": cmd_images, "rm": cmd_rmi, "tag": cmd_tag, "import": cmd_import}
