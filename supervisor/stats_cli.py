"""``corral stats``: docker stats over the ``container.stats`` stream (on the anyio client; commands.py).

One stream per container, all on the one connection; the screen shows the
latest document of each. On a terminal the table is redrawn in place every
second (clear screen, cursor home, as docker does); into a pipe each second's
table (or JSON lines) is appended. ``--no-stream`` asks each container for
one document (the daemon takes two readings a second apart) and exits.

Rules:

1. Named containers are followed until their stream ends (the container was
   removed: the daemon ends it then) or fails; a name that fails is an error
   (exit status 1), as in docker.
2. Without names the rows follow the daemon's listing, read again before
   every redraw (``protocols.stats.follow_listing``): a container that starts
   later gets a stream and a row at the bottom, one that stops (without
   ``-a``) or is removed loses both. A container that goes between the
   listing and its stream's first document is no error: it is just gone.

Rejected: following ``system.events`` (start/die/destroy) as the docker CLI
does. A container started between our listing and the daemon's subscription
would never appear; one listing a second cannot miss anything, and costs one
small call.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from protocols.stats import follow_listing, format_table, row_json, stats_row

from .blocking_client import RpcError

REDRAW_S = 1.0
_CLEAR = "\033[2J\033[H"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("stats", help="live resource usage of containers")
    sp.add_argument("-a", "--all", action="store_true", help="all containers (default: running ones)")
    sp.add_argument("--no-stream", action="store_true", help="one sample, then exit")
    sp.add_argument("--no-trunc", action="store_true", help="full container ids")
    sp.add_argument("--format", choices=("table", "json"), default="table")
    sp.add_argument("containers", nargs="*")


def _print(rows: list[dict[str, str]], fmt: str, *, clear: bool) -> None:
    out = [row_json(r) for r in rows] if fmt == "json" else format_table(rows)
    text = "\n".join(out) + "\n" if out else ""
    sys.stdout.write((_CLEAR if clear else "") + text)
    sys.stdout.flush()


async def _listing(client, *, all: bool) -> list[str]:
    return [r["Id"][:12] for r in await client.call("container.list", all=all)]


async def cmd_stats(client, args) -> int:
    import anyio     # here, not at the top: every other verb would pay for it

    named = bool(args.containers)
    refs: list[str] = list(args.containers) if named else await _listing(client, all=args.all)
    latest: dict[str, dict[str, Any]] = {}
    failed = 0

    async def follow(ref: str, *, stream: bool, scope: anyio.CancelScope | None = None) -> None:
        nonlocal failed
        with scope or anyio.CancelScope():
            try:
                async with client.stream("container.stats", id=ref, stream=stream) as docs:
                    async for doc in docs:
                        latest[ref] = doc
            except RpcError as exc:
                if named or exc.code != "NOT_FOUND":      # rule 2: gone before its first document
                    print(f"corral: {exc.message}", file=sys.stderr)
                    failed += 1
        if stream:
            latest.pop(ref, None)             # stopped streaming (removed): off the table

    def rows() -> list[dict[str, str]]:
        return [stats_row(latest[r], container=r, no_trunc=args.no_trunc) for r in refs if r in latest]

    if args.no_stream:
        async with anyio.create_task_group() as tasks:
            for ref in refs:
                tasks.start_soon(lambda r=ref: follow(r, stream=False))
        _print(rows(), args.format, clear=False)
        return 1 if failed else 0
    tty = sys.stdout.isatty()
    scopes: dict[str, anyio.CancelScope] = {}
    async with anyio.create_task_group() as tasks:

        def watch(ref: str) -> None:
            scope = scopes[ref] = anyio.CancelScope()
            tasks.start_soon(lambda: follow(ref, stream=True, scope=scope))

        for ref in refs:
            watch(ref)
        while True:
            await anyio.sleep(REDRAW_S)
            if named and failed and not latest and failed == len(refs):
                tasks.cancel_scope.cancel()
                break
            if not named:                     # rule 2
                added, removed = follow_listing(refs, await _listing(client, all=args.all))
                for ref in removed:
                    scopes.pop(ref).cancel()
                    latest.pop(ref, None)
                    refs.remove(ref)
                for ref in added:
                    refs.append(ref)
                    watch(ref)
            _print(rows(), args.format, clear=tty and args.format == "table")
    return 1 if failed else 0


VERBS = {"stats": cmd_stats}
