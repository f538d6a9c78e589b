"""The ``corral`` verbs that talk to the daemon: run, ps, stop, ... as docker prints them.

Each verb parses its flags, makes its RPC calls and prints. Exit codes are
Docker's: ``run`` and ``wait`` return the container's status; 125 when the
daemon or the request failed; 126/127 when the command cannot be invoked or
is not found.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import trio

from protocols.container_config import InvalidContainerConfig, parse_bytes, parse_cpus

from .client import ConnectionLost, RpcError, connect

DEFAULT_HOST = "unix:///run/corral/corral.sock"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="corral", description="Talk to the corral daemon.")
    p.add_argument("-H", "--host", default=os.environ.get("CORRAL_HOST", DEFAULT_HOST),
                   help=f"daemon socket (default $CORRAL_HOST or {DEFAULT_HOST})")
    sub = p.add_subparsers(dest="verb", required=True)
    for verb in ("run", "create"):
        sp = sub.add_parser(verb, help=f"{verb} a container")
        if verb == "run":
            sp.add_argument("-d", "--detach", action="store_true")
            sp.add_argument("--rm", action="store_true", help="remove the container when it exits")
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
        sp.add_argument("image")
        sp.add_argument("command", nargs=argparse.REMAINDER)
    for verb in ("start", "pause", "unpause", "inspect"):
        sub.add_parser(verb).add_argument("containers", nargs="+")
    for verb in ("stop", "restart"):
        sp = sub.add_parser(verb)
        sp.add_argument("-t", "--time", type=float)
        sp.add_argument("containers", nargs="+")
    sp = sub.add_parser("kill")
    sp.add_argument("-s", "--signal", default="SIGKILL")
    sp.add_argument("containers", nargs="+")
    sp = sub.add_parser("rm")
    sp.add_argument("-f", "--force", action="store_true")
    sp.add_argument("containers", nargs="+")
    sub.add_parser("wait").add_argument("containers", nargs="+")
    sp = sub.add_parser("rename")
    sp.add_argument("container")
    sp.add_argument("new_name")
    sp = sub.add_parser("ps")
    sp.add_argument("-a", "--all", action="store_true")
    sp.add_argument("-q", "--quiet", action="store_true")
    sp.add_argument("--no-trunc", action="store_true")
    sp.add_argument("--format", choices=("table", "json"), default="table")
    sp = sub.add_parser("images")
    sp.add_argument("--format", choices=("table", "json"), default="table")
    sp = sub.add_parser("image")
    isub = sp.add_subparsers(dest="image_verb", required=True)
    isub.add_parser("bootstrap").add_argument("name", choices=("busybox",))
    sp = sub.add_parser("events")
    sp.add_argument("--since", type=int, help="resume after this event seq")
    sp.add_argument("--until", type=int, help="stop at this event seq")
    sp.add_argument("-f", "--filter", action="append", default=[], help="key=value (type, event, container, label, image)")
    sp.add_argument("--format", choices=("text", "json"), default="text")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        return trio.run(_dispatch, args)
    except (RpcError, InvalidContainerConfig) as exc:
        print(f"corral: {exc}", file=sys.stderr)
        return 125
    except (OSError, ConnectionLost) as exc:
        print(f"corral: cannot talk to the daemon at {args.host}: {exc}", file=sys.stderr)
        return 125


async def _dispatch(args: argparse.Namespace) -> int:
    async with connect(args.host.removeprefix("unix://")) as client:
        return await _VERBS[args.verb](client, args)


def create_body(args: argparse.Namespace) -> dict[str, Any]:
    """The flags as Docker's create body (what `docker run` sends; see docs)."""
    env = list(args.env)
    for path in args.env_file:
        with open(path) as f:
            env += [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    binds, tmpfs = [], {}
    for v in args.volume:
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
    if args.stop_signal:
        body["StopSignal"] = args.stop_signal
    if args.stop_timeout is not None:
        body["StopTimeout"] = args.stop_timeout
    return body


def _restart(text: str) -> dict[str, Any]:
    name, _, count = text.partition(":")
    return {"Name": name, "MaximumRetryCount": int(count) if count.isdigit() else 0}


async def _create(client, args) -> str:
    created = await client.call("container.create", body=create_body(args), name=args.name)
    if args.cidfile:
        with open(args.cidfile, "x") as f:          # Docker refuses an existing cidfile
            f.write(created["Id"])
    return created["Id"]


async def cmd_create(client, args) -> int:
    print(await _create(client, args))
    return 0


async def cmd_run(client, args) -> int:
    # --rm in the foreground is done here, after the output is read (the old
    # docker client's way); detached, the daemon removes it (AutoRemove).
    remove_after = args.rm and not args.detach
    if remove_after:
        args.rm = False
    cid = await _create(client, args)
    try:
        try:
            await client.call("container.start", id=cid)
        except RpcError as exc:
            print(f"corral: {exc.message}", file=sys.stderr)
            # Docker's codes: 126/127 when the command is the cause, else 125.
            return exc.details.get("exit_code") if exc.details.get("exit_code") in (126, 127) else 125
        if args.detach:
            print(cid)
            return 0
        log_path = (await client.call("container.inspect", id=cid))["LogPath"]
        async with trio.open_nursery() as nursery:
            done = trio.Event()
            nursery.start_soon(_follow, log_path, done)
            result = await client.call("container.wait", id=cid)
            done.set()
        return int(result["StatusCode"])
    finally:
        if remove_after:
            await client.call("container.remove", id=cid, force=True)


async def _follow(path: str, done: trio.Event) -> None:
    """Copy the container's output to ours as it grows, until ``done`` and drained.

    (Attach over the socket comes with the interactive-commands issue; the log
    file is what the daemon writes, so nothing is lost between reads.)
    """
    offset = 0
    while True:
        finished = done.is_set()
        chunk = await trio.to_thread.run_sync(_read_from, path, offset)
        if chunk:
            offset += len(chunk)
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        elif finished:
            return
        else:
            with trio.move_on_after(0.05):
                await done.wait()


def _read_from(path: str, offset: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(1 << 20)
    except FileNotFoundError:
        return b""


async def _each(client, args, method: str, **params) -> int:
    code = 0
    for ref in args.containers:
        try:
            await client.call(method, id=ref, **params)
            print(ref)
        except RpcError as exc:
            print(f"corral: {exc.message}", file=sys.stderr)
            code = 1
    return code


async def cmd_start(client, args) -> int:
    return await _each(client, args, "container.start")


async def cmd_stop(client, args) -> int:
    return await _each(client, args, "container.stop", timeout=args.time)


async def cmd_restart(client, args) -> int:
    return await _each(client, args, "container.restart", timeout=args.time)


async def cmd_kill(client, args) -> int:
    return await _each(client, args, "container.kill", signal=args.signal)


async def cmd_rm(client, args) -> int:
    return await _each(client, args, "container.remove", force=args.force)


async def cmd_pause(client, args) -> int:
    return await _each(client, args, "container.pause")


async def cmd_unpause(client, args) -> int:
    return await _each(client, args, "container.unpause")


async def cmd_wait(client, args) -> int:
    """Prints each container's status; exits 0 (docker wait)."""
    for ref in args.containers:
        result = await client.call("container.wait", id=ref)
        print(result["StatusCode"])
    return 0


async def cmd_rename(client, args) -> int:
    await client.call("container.rename", id=args.container, name=args.new_name)
    return 0


async def cmd_inspect(client, args) -> int:
    out = [await client.call("container.inspect", id=ref) for ref in args.containers]
    print(json.dumps(out, indent=4))
    return 0


async def cmd_ps(client, args) -> int:
    rows = await client.call("container.list", all=args.all)
    if args.quiet:
        for r in rows:
            print(r["Id"] if args.no_trunc else r["Id"][:12])
        return 0
    if args.format == "json":
        for r in rows:
            print(json.dumps(r))
        return 0
    table = [("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES")]
    now = time.time()
    for r in rows:
        command = r["Command"] if args.no_trunc else _trunc(r["Command"], 20)
        table.append((r["Id"] if args.no_trunc else r["Id"][:12], r["Image"], f'"{command}"',
                      _ago(now - r["Created"]), r["Status"], "", ",".join(n.lstrip("/") for n in r["Names"])))
    _print_table(table)
    return 0


async def cmd_images(client, args) -> int:
    rows = await client.call("image.list")
    if args.format == "json":
        for r in rows:
            print(json.dumps(r))
        return 0
    table = [("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")]
    for r in rows:
        for tag in r["RepoTags"] or ["<none>:<none>"]:
            repo, _, t = tag.rpartition(":")
            table.append((repo, t, r["Id"].removeprefix("sha256:")[:12], _ago(time.time() - _epoch(r["Created"])),
                          _size(r["Size"])))
    _print_table(table)
    return 0


async def cmd_image(client, args) -> int:
    image = await client.call("image.bootstrap", name=args.name)
    print(image["Id"])
    return 0


async def cmd_events(client, args) -> int:
    filters: dict[str, list[str]] = {}
    for f in args.filter:
        key, _, value = f.partition("=")
        filters.setdefault(key, []).append(value)
    async with client.stream("system.events", filters=filters, since=args.since, until=args.until) as events:
        async for e in events:
            if args.format == "json":
                print(json.dumps(e), flush=True)
            else:
                attrs = ", ".join(f"{k}={v}" for k, v in sorted(e["attributes"].items()))
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(e["time_ns"] / 1e9))
                print(f"{stamp}.{e['time_ns'] % 1_000_000_000:09d} {e['type']} {e['action']} {e['id']} ({attrs})",
                      flush=True)
    return 0


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _trunc(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _ago(seconds: float) -> str:
    from .engine import _human
    return f"{_human(int(seconds * 1e9))} ago"


def _epoch(created: Any) -> float:
    if isinstance(created, (int, float)):
        return float(created)
    try:
        return time.mktime(time.strptime(str(created)[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    except ValueError:
        return time.time()


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.3g}{unit}"
        n /= 1000
    return f"{n:.3g}TB"


_VERBS = {
    "run": cmd_run, "create": cmd_create, "start": cmd_start, "stop": cmd_stop, "restart": cmd_restart,
    "kill": cmd_kill, "rm": cmd_rm, "pause": cmd_pause, "unpause": cmd_unpause, "wait": cmd_wait,
    "rename": cmd_rename, "inspect": cmd_inspect, "ps": cmd_ps, "images": cmd_images, "image": cmd_image,
    "events": cmd_events,
}
