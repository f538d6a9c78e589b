"""``corral build`` and ``corral commit``: the CLI side of supervisor/build.py and commit.py (anyio).

``build`` sends the context as a tar upload (``transfer.write``, files.py
rule 3) made here with the ``.dockerignore`` applied (the Dockerfile and the
``.dockerignore`` always go, as the docker CLI sends them), and the
Dockerfile's text as a parameter, so ``-f`` may name a file outside the
context. The output arrives as stream items of ``image.build`` and is printed
as it comes; ``-q`` prints only the image id. A failed build exits 1, as
``docker build`` does.
"""

from __future__ import annotations

import argparse
import os
import sys
import tarfile
import tempfile
from pathlib import Path

import anyio
import anyio.to_thread

from protocols.dockerfile import DockerfileError, DockerIgnore, parse_dockerignore

from .client import RpcError
from .files_cli import _upload


def _bool(text: str) -> bool:
    value = text.lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {text!r}")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("build", help="build an image from a Dockerfile and a context directory")
    sp.add_argument("-t", "--tag", action="append", default=[], help="name[:tag] (repeatable)")
    sp.add_argument("-f", "--file", help="the Dockerfile (default CONTEXT/Dockerfile)")
    sp.add_argument("--build-arg", action="append", default=[], help="KEY=VALUE, or KEY to take it from the environment")
    sp.add_argument("--target", help="build up to this stage")
    sp.add_argument("--no-cache", action="store_true", help="do not use the layer cache")
    sp.add_argument("--label", action="append", default=[], help="KEY=VALUE set on the image (repeatable)")
    sp.add_argument("-q", "--quiet", action="store_true", help="print only the image id")
    sp.add_argument("context", help="a directory")
    sp = sub.add_parser("commit", help="a container's changes as a new image")
    sp.add_argument("-a", "--author", default="")
    sp.add_argument("-m", "--message", default="")
    sp.add_argument("-c", "--change", action="append", default=[], help="a Dockerfile instruction (CMD, ENV, ...)")
    sp.add_argument("-p", "--pause", type=_bool, nargs="?", const=True, default=True,
                    help="freeze the container while committing (default true)")
    sp.add_argument("container")
    sp.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]")


def _pairs(items: list[str], what: str, *, from_env: bool = False) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise SystemExit(f"corral: invalid {what} {item!r} (want KEY=VALUE)")
        if not sep:
            if not from_env:
                value = ""
            elif key in os.environ:
                value = os.environ[key]
            else:
                continue                    # docker: an unset variable passes no value
        out[key] = value
    return out


def make_context_tar(context: Path, ignore: DockerIgnore, out, *, always: frozenset[str] = frozenset()) -> None:
    """The context directory as a tar into ``out`` (a binary file): names relative to it, sorted,
    symlinks as symlinks, what ``ignore`` excludes left out (``always`` names are kept)."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory, dirs, files in os.walk(context):
            rel_dir = os.path.relpath(directory, context)
            rel_dir = "" if rel_dir == "." else rel_dir + "/"
            dirs.sort()
            for name in list(dirs):
                rel = rel_dir + name
                if ignore.excluded(rel):
                    if not ignore.has_exclusions:
                        dirs.remove(name)   # nothing below can come back: do not even walk it
                    continue
                tar.add(os.path.join(directory, name), arcname=rel, recursive=False)
            for name in sorted(files):
                rel = rel_dir + name
                if ignore.excluded(rel) and rel not in always:
                    continue
                tar.add(os.path.join(directory, name), arcname=rel, recursive=False)


async def cmd_build(client, args) -> int:
    context = Path(args.context)
    if not context.is_dir():
        print(f"corral: unable to prepare context: path {args.context!r} not found or not a directory",
              file=sys.stderr)
        return 1
    dockerfile_path = Path(args.file) if args.file else context / "Dockerfile"
    try:
        dockerfile = dockerfile_path.read_text()
    except OSError as exc:
        print(f"corral: cannot read the Dockerfile {dockerfile_path}: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        ignore_text = (context / ".dockerignore").read_text()
    except FileNotFoundError:
        ignore_text = ""
    try:
        ignore = parse_dockerignore(ignore_text)
    except DockerfileError as exc:
        print(f"corral: {exc}", file=sys.stderr)
        return 1
    always = frozenset({".dockerignore"})
    try:
        always |= {str(dockerfile_path.resolve().relative_to(context.resolve()))}
    except ValueError:
        pass                                # a Dockerfile outside the context: its text is sent anyway

    def pack():
        f = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the caller, which closes it
        try:
            make_context_tar(context, ignore, f, always=always)
            f.seek(0)
        except BaseException:
            f.close()
            raise
        return f

    spool = await anyio.to_thread.run_sync(pack)
    try:
        token = await _upload(client, spool.read)
    finally:
        spool.close()
    image_id = None
    try:
        async with client.stream("image.build", transfer=token, dockerfile=dockerfile, tags=args.tag,
                                 build_args=_pairs(args.build_arg, "--build-arg", from_env=True),
                                 target=args.target, no_cache=args.no_cache,
                                 labels=_pairs(args.label, "--label")) as items:
            async for item in items:
                if "aux" in item:
                    image_id = item["aux"].get("ID")
                elif "stream" in item and not args.quiet:
                    sys.stdout.write(item["stream"])
                    sys.stdout.flush()
    except RpcError as exc:
        sys.stdout.flush()
        print(f"corral: {exc.message}", file=sys.stderr)
        return 1
    if args.quiet and image_id:
        print(image_id)
    return 0


async def cmd_commit(client, args) -> int:
    reply = await client.call("image.commit", id=args.container, reference=args.reference, author=args.author,
                              message=args.message, changes=args.change, pause=args.pause)
    print(reply["Id"])
    return 0


VERBS = {"build": cmd_build, "commit": cmd_commit}
