"""``corral stats``: docker stats over the ``container.stats`` stream (anyio, like commands.py).

One stream per container, all on the one connection; the screen shows the
latest document of each. On a terminal the table is redrawn in place every
second (clear screen, cursor home, as docker does); into a pipe each second's
table (or JSON lines) is appended. ``--no-stream`` asks each container for
one document (the daemon takes two readings a second apart) and exits.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import anyio

from protocols.stats import format_table, row_json, stats_row

from .client import RpcError

REDRAW_S = 1.0
_CLEAR = "\033[2J\033[H"


def add_parser(sub: argparse._SubParsersAction) -> None:
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


async def cmd_stats(client, args) -> int:
    if args.containers:
        refs = list(args.containers)
    else:
        refs = [r["Id"][:12] for r in await client.call("container.list", all=args.all)]
    latest: dict[str, dict[str, Any]] = {}
    failed = 0

    async def follow(ref: str, *, stream: bool) -> None:
        nonlocal failed
        try:
            async with client.stream("container.stats", id=ref, stream=stream) as docs:
                async for doc in docs:
                    latest[ref] = doc
        except RpcError as exc:
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
    async with anyio.create_task_group() as tasks:
        for ref in refs:
            tasks.start_soon(lambda r=ref: follow(r, stream=True))
        while True:
            await anyio.sleep(REDRAW_S)
            if failed and not latest and failed == len(refs):
                tasks.cancel_scope.cancel()
                break
            _print(rows(), args.format, clear=tty and args.format == "table")
    return 1 if failed else 0
