"""``corral runtime``: runc's verbs with runc's meaning, over runtime.container.

Exit codes: the container's own status for ``run`` (128+N when killed by
signal N); 127/126 when the command is not found / not executable (runc exits 1
there; we keep the shell's codes, which Docker also uses); 1 for any other
error, printed as one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from runtime.container import DEFAULT_ROOT, Container
from runtime.errors import HostError, SpawnError

# Signals `run` forwards to the container, as runc's signal handler does.
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
              signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="corral runtime", description="Run OCI bundles (runc's command line).")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=f"state directory (default {DEFAULT_ROOT})")
    p.add_argument("--log", help="accepted for runc compatibility; errors go to stderr")
    p.add_argument("--log-format", help=argparse.SUPPRESS)
    p.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True)

    def with_id(name: str, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("id")
        return sp

    for name, help_ in (("create", "create a container, its init waiting for start"),
                        ("run", "create and start a container")):
        sp = with_id(name, help_)
        sp.add_argument("-b", "--bundle", default=".", help="bundle directory (default: the current one)")
        sp.add_argument("--pid-file", help="write the init's PID here")
        sp.add_argument("--console-socket", help=argparse.SUPPRESS)
        sp.add_argument("--no-pivot", action="store_true", help=argparse.SUPPRESS)
        if name == "run":
            sp.add_argument("-d", "--detach", action="store_true", help="do not wait for the container")
    sp = sub.add_parser("spec", help="write a default config.json (as runc spec)")
    sp.add_argument("-b", "--bundle", default=".", help="directory to write config.json in")
    with_id("start", "start a created container")
    with_id("state", "print the container's state as JSON")
    sp = with_id("kill", "send a signal to the container's init")
    sp.add_argument("signal", nargs="?", default="SIGTERM")
    sp.add_argument("-a", "--all", action="store_true", help="signal every process of the container")
    sp = with_id("delete", "delete a stopped container")
    sp.add_argument("-f", "--force", action="store_true", help="kill it first if it runs")
    with_id("pause", "freeze every process of the container")
    with_id("resume", "thaw a paused container")
    sp = sub.add_parser("list", help="list containers")
    sp.add_argument("-q", "--quiet", action="store_true")
    sp.add_argument("-f", "--format", choices=("table", "json"), default="table")
    sp = with_id("ps", "list the container's processes")
    sp.add_argument("-f", "--format", choices=("table", "json"), default="table")
    sp.add_argument("ps_args", nargs=argparse.REMAINDER, help="arguments for ps (default -ef)")
    sp = with_id("events", "print the container's stats and OOM events as JSON")
    sp.add_argument("--stats", action="store_true", help="print one stats sample and exit")
    sp.add_argument("--interval", type=float, default=5.0, help="seconds between samples (default 5)")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except SpawnError as exc:
        print(f"corral runtime: {exc}", file=sys.stderr)
        return exc.exit_code
    except HostError as exc:
        print(f"corral runtime: {exc}", file=sys.stderr)
        return 1


def _create(args: argparse.Namespace) -> int:
    container, child = Container.create(args.root, args.id, args.bundle, detached=True)
    child.close()
    _write_pid_file(args.pid_file, container.state.pid)
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.detach:
        container, child = Container.create(args.root, args.id, args.bundle, detached=True)
        child.close()
        _write_pid_file(args.pid_file, container.state.pid)
        container.start()
        return 0
    # Handlers first: the init may run (and the caller signal us) before create
    # returns. A signal that comes before there is a child waits for it.
    children: list = []
    pending: list[int] = []

    def forward(signum: int, _frame) -> None:
        if children:
            children[0].send_signal(signum)
        else:
            pending.append(signum)

    for signum in _FORWARDED:
        signal.signal(signum, forward)
    try:
        container, child = Container.create(args.root, args.id, args.bundle, detached=False)
    except BaseException:
        for signum in _FORWARDED:
            signal.signal(signum, signal.SIG_DFL)
        raise
    children.append(child)
    for signum in pending:
        child.send_signal(signum)
    try:
        _write_pid_file(args.pid_file, child.pid)
        child.wait_exec()
        status = child.wait()      # waitid(P_PIDFD): retried after each forwarded signal
        oom = container.oom_killed()
        if oom:
            print(f"corral runtime: container {args.id} was OOM-killed ({status})", file=sys.stderr)
        return status.exit_code
    finally:
        for signum in _FORWARDED:
            signal.signal(signum, signal.SIG_DFL)
        child.close()
        container.delete(force=True)


def _spec(args: argparse.Namespace) -> int:
    from protocols.runtime_spec import default_spec_document

    path = Path(args.bundle) / "config.json"
    if path.exists():
        raise HostError(f"file {path} exists; remove it first")
    path.write_text(json.dumps(default_spec_document(), indent="\t") + "\n")
    return 0


def _start(args: argparse.Namespace) -> int:
    Container.load(args.root, args.id).start()
    return 0


def _state(args: argparse.Namespace) -> int:
    print(json.dumps(Container.load(args.root, args.id).oci_state(), indent=2))
    return 0


def _kill(args: argparse.Namespace) -> int:
    Container.load(args.root, args.id).kill(_parse_signal(args.signal), all_processes=args.all)
    return 0


def _delete(args: argparse.Namespace) -> int:
    Container.load(args.root, args.id).delete(force=args.force)
    return 0


def _pause(args: argparse.Namespace) -> int:
    Container.load(args.root, args.id).pause()
    return 0


def _resume(args: argparse.Namespace) -> int:
    Container.load(args.root, args.id).resume()
    return 0


def _list(args: argparse.Namespace) -> int:
    containers = Container.list(args.root)
    if args.quiet:
        for c in containers:
            print(c.state.id)
        return 0
    states = [c.oci_state() for c in containers]
    if args.format == "json":
        print(json.dumps(states))
        return 0
    rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], "root") for s in states]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("   ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    return 0


def _ps(args: argparse.Namespace) -> int:
    pids = Container.load(args.root, args.id).cgroup.pids()
    if args.format == "json":
        print(json.dumps(pids))
        return 0
    import subprocess

    # As runc: run ps with the given arguments, keep the header and the container's rows.
    out = subprocess.run(["ps", *(args.ps_args or ["-ef"])], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    header = lines[0].split()
    if "PID" not in header:
        raise HostError("ps output has no PID column")
    col = header.index("PID")
    print(lines[0])
    wanted = set(pids)
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > col and fields[col].isdigit() and int(fields[col]) in wanted:
            print(line)
    return 0


def _events(args: argparse.Namespace) -> int:
    container = Container.load(args.root, args.id)
    if args.stats:
        print(json.dumps(container.stats()))
        return 0
    import select
    watch = container.cgroup.open_oom_watch()
    try:
        while container.status() != "stopped":
            print(json.dumps(container.stats()), flush=True)
            ready, _, _ = select.select([watch], [], [], args.interval)
            if ready:
                os.read(watch, 4096)
                print(json.dumps({"type": "oom", "id": args.id}), flush=True)
    finally:
        os.close(watch)
    return 0


def _parse_signal(text: str) -> int:
    if text.isdigit():
        if 0 < int(text) < signal.NSIG:
            return int(text)
        raise HostError(f"invalid signal number {text} (1..{signal.NSIG - 1})")
    name = text.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return signal.Signals[name].value
    except KeyError:
        raise HostError(f"unknown signal {text!r}") from None


def _write_pid_file(path: str | None, pid: int) -> None:
    if path:
        tmp = f"{path}.tmp"
        Path(tmp).write_text(str(pid))
        os.replace(tmp, path)


_COMMANDS = {
    "spec": _spec, "create": _create, "run": _run, "start": _start, "state": _state, "kill": _kill,
    "delete": _delete, "pause": _pause, "resume": _resume, "list": _list, "ps": _ps,
    "events": _events,
}
