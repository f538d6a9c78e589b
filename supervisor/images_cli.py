"""``corral history``, ``image prune``, ``system df``: the image store's upkeep, as docker prints it."""

from __future__ import annotations

import argparse
import json
import sys
import time

TYPE_CHECKING = False       # typing's, without importing typing (~3 ms of every CLI command's start)
if TYPE_CHECKING:
    from typing import Any


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``history`` and ``system df``."""
    _history_args(sub.add_parser("history", help="an image's layers and the steps that made them"))
    sp = sub.add_parser("system", help="the daemon's disk use")
    ssub = sp.add_subparsers(dest="system_verb", required=True)
    sp = ssub.add_parser("df", help="disk usage of images, containers and volumes")
    sp.add_argument("--format", choices=("table", "json"), default="table")


def add_image_parsers(isub: argparse._SubParsersAction) -> None:
    """``image history`` and ``image prune``."""
    _history_args(isub.add_parser("history"))
    sp = isub.add_parser("prune", help="remove unused images")
    sp.add_argument("-a", "--all", action="store_true", help="every image no container uses, not only untagged ones")
    sp.add_argument("-f", "--force", action="store_true", help="do not ask")
    sp.add_argument("--filter", action="append", default=[], help="label=KEY[=VALUE] or label!=...")


def _history_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-trunc", action="store_true")
    parser.add_argument("-q", "--quiet", action="store_true", help="only image ids")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("image")


def cmd_history(client, args) -> int:
    from .commands import _ago, _print_table, _size

    rows = client.call("image.history", id=args.image)
    if args.format == "json":
        for r in rows:
            print(json.dumps(r))
        return 0
    if args.quiet:
        for r in rows:
            print(_short(r["Id"], args.no_trunc))
        return 0
    table = [("IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT")]
    for r in rows:
        created_by = r["CreatedBy"] if args.no_trunc or len(r["CreatedBy"]) <= 45 else r["CreatedBy"][:44] + "…"
        table.append((_short(r["Id"], args.no_trunc), _ago(time.time() - r["Created"]) if r["Created"] else "N/A",
                      created_by, _size(r["Size"]), r["Comment"]))
    _print_table(table)
    return 0


def _short(image_id: str, no_trunc: bool) -> str:
    if image_id == "<missing>" or no_trunc:
        return image_id
    return image_id.removeprefix("sha256:")[:12]


def cmd_image_prune(client, args) -> int:
    from .commands import _filters, _size   # not at the top: commands imports this module

    if not args.force and sys.stdin.isatty():
        what = "all images without at least one container associated to them" if args.all else "all dangling images"
        answer = input(f"WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            return 0
    result = client.call("image.prune", all=args.all, filters=_filters(args.filter))
    deleted = result.get("ImagesDeleted") or []
    if deleted:
        print("Deleted Images:")
        for record in deleted:
            for action, name in record.items():
                print(f"{action.lower()}: {name}")
        print()
    print(f"Total reclaimed space: {_size(result['SpaceReclaimed'])}")
    return 0


def cmd_system(client, args) -> int:
    from .commands import _print_table, _size

    df = client.call("system.df")
    if args.format == "json":
        print(json.dumps(df))
        return 0

    def row(kind: str, items: list[dict[str, Any]], active: int, size: int, reclaimable: int) -> tuple[str, ...]:
        share = f" ({reclaimable * 100 // size}%)" if size else ""
        return (kind, str(len(items)), str(active), _size(size), _size(reclaimable) + share)

    images = df["Images"]
    image_size = sum(i["Size"] for i in images)
    image_unused = sum(i["Size"] for i in images if not i.get("Containers"))
    containers = df["Containers"]
    container_size = sum(c.get("SizeRw", 0) for c in containers)
    stopped_size = sum(c.get("SizeRw", 0) for c in containers if c.get("State") != "running")
    volumes = df["Volumes"]
    volume_size = sum(v["UsageData"]["Size"] for v in volumes)
    volume_unused = sum(v["UsageData"]["Size"] for v in volumes if not v["UsageData"]["RefCount"])
    _print_table([("TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"),
                  row("Images", images, sum(1 for i in images if i.get("Containers")), image_size, image_unused),
                  row("Containers", containers, sum(1 for c in containers if c.get("State") == "running"),
                      container_size, stopped_size),
                  row("Local Volumes", volumes, sum(1 for v in volumes if v["UsageData"]["RefCount"]),
                      volume_size, volume_unused),
                  ("Build Cache", "0", "0", "0B", "0B")])
    return 0


VERBS = {"history": cmd_history, "system": cmd_system}
IMAGE_VERBS = {"history": cmd_history, "prune": cmd_image_prune}
