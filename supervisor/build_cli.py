"""``corral build`` and ``corral commit``: the CLI side of supervisor/build.py and commit.py.

``build`` runs on its own: ``cli.py`` hands it the arguments before any other
verb's module is imported. It makes one streaming request, so it speaks the
RPC over a blocking socket (``blocking_client.BlockingClient``), with no event
loop, no anyio and no other verb's parser; the command costs little more than
the interpreter's start-up and the daemon's answer.

Rules:

1. The context goes by name when it can. The daemon listens on a unix socket,
   so it runs on this host: ``image.build`` gets ``context``, the directory's
   real path with the (st_dev, st_ino) seen here, and the daemon walks it with
   its ``.dockerignore`` (build.py rule 6). The Dockerfile always goes as text,
   so ``-f`` may name a file outside the context; one inside it is in ``keep``
   with ``.dockerignore``: both are sent whatever ``.dockerignore`` says, as
   the docker CLI sends them.
2. A daemon that sees another directory at that path (``context_unavailable``:
   another mount namespace) or does not know the ``context`` param (an older
   daemon) gets the context as a tar upload instead (``transfer.write``,
   files.py rule 3), written by ``runtime.build_context.write_context_tar``:
   the daemon's own walk, so either way builds from the same cache. Nothing
   has been printed before that answer.
3. Output arrives as stream items of ``image.build`` and is printed as it
   comes; ``-q`` prints only the image id. A failed build exits 1, as ``docker
   build`` does; a daemon that cannot be reached, 125; Ctrl-C, 130 (closing
   the connection cancels the build).

Rejected: the anyio client of the other verbs. Importing anyio and asyncio and
building every verb's parser cost more than the daemon's whole answer to an
unchanged rebuild (bench/images.py, the cached build).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from typing import Any

from .blocking_client import BlockingClient, ConnectionLost, RpcError
from .cli import bool_flag
from .version import VERSION

DEFAULT_HOST = "unix:///run/corral/corral.sock"     # commands.DEFAULT_HOST (not imported: start-up time)
CLIENT_AGENT = f"corral-build/{VERSION}"
CONTEXT_UNAVAILABLE = "context_unavailable"          # build.CONTEXT_UNAVAILABLE (the daemon's side)
UPLOAD_CHUNK = 512 << 10                             # a transfer.write frame stays under the 1 MiB limit


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
    sp.add_argument("-p", "--pause", type=bool_flag, nargs="?", const=True, default=True,
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


# ---------------------------------------------------------------- the daemon, blocking


# ---------------------------------------------------------------- build


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="corral", description="Talk to the corral daemon.")
    p.add_argument("-H", "--host", default=os.environ.get("CORRAL_HOST", DEFAULT_HOST),
                   help=f"daemon socket (default $CORRAL_HOST or {DEFAULT_HOST})")
    sub = p.add_subparsers(dest="verb", required=True, prog="corral")   # prog given: no help formatter made
    add_parsers(sub)
    return p


def main(argv: list[str]) -> int:
    """``corral [-H HOST] build ...`` (cli.py routes it here first); the exit status."""
    args = _parser().parse_args(argv)
    if args.verb != "build":
        from .commands import main as commands_main
        return commands_main(argv)
    try:
        return run_build(args)
    except KeyboardInterrupt:
        return 130


def run_build(args: argparse.Namespace, *, upload: bool = False, out=None) -> int:
    """Build ``args.context`` (the build parser's namespace, with ``host``); the exit status.

    Args:
        upload: send the context as a tar even to a local daemon (rule 2's way; tests use it).
        out: where the output goes (``sys.stdout``).
    """
    out = out if out is not None else sys.stdout
    if not os.path.isdir(args.context):
        print(f"corral: unable to prepare context: path {args.context!r} not found or not a directory",
              file=sys.stderr)
        return 1
    context = os.path.realpath(args.context)
    try:
        st = os.stat(context)
    except OSError as exc:
        print(f"corral: unable to prepare context: {context}: {exc.strerror}", file=sys.stderr)
        return 1
    dockerfile_path = args.file or os.path.join(context, "Dockerfile")
    try:
        with open(dockerfile_path) as f:
            dockerfile = f.read()
    except OSError as exc:
        print(f"corral: cannot read the Dockerfile {dockerfile_path}: {exc.strerror}", file=sys.stderr)
        return 1
    keep = [".dockerignore"]
    inside = os.path.relpath(os.path.realpath(dockerfile_path), context)
    if inside != ".." and not inside.startswith("../"):
        keep.append(inside)                     # else a Dockerfile outside the context: its text goes anyway
    params = {"dockerfile": dockerfile, "tags": args.tag, "target": args.target, "no_cache": args.no_cache,
              "build_args": _pairs(args.build_arg, "--build-arg", from_env=True),
              "labels": _pairs(args.label, "--label")}
    host = args.host
    try:
        with BlockingClient(host.removeprefix("unix://"), agent=CLIENT_AGENT) as daemon:
            try:
                if not upload:
                    local = {"path": context, "device": st.st_dev, "inode": st.st_ino, "keep": keep}
                    try:
                        return _show(daemon.stream("image.build", context=local, **params), args.quiet, out)
                    except RpcError as exc:
                        if not _upload_instead(exc):
                            raise
                token = _upload_context(daemon, context, keep)
                if token is None:
                    return 1
                return _show(daemon.stream("image.build", transfer=token, **params), args.quiet, out)
            except RpcError as exc:
                out.flush()
                print(f"corral: {exc.message}", file=sys.stderr)
                return 1
    except (OSError, ConnectionLost, RpcError) as exc:
        out.flush()
        print(f"corral: cannot talk to the daemon at {host}: {exc}", file=sys.stderr)
        return 125


def _upload_instead(exc: RpcError) -> bool:
    """Rule 2: the daemon cannot read the context where we named it, or knows no ``context`` param."""
    if exc.details.get("reason") == CONTEXT_UNAVAILABLE:
        return True
    return exc.code == "BAD_REQUEST" and exc.message.startswith("bad params for image.build")


def _upload_context(daemon: BlockingClient, context: str, keep: list[str]) -> str | None:
    """Rule 2: the context as a tar, uploaded; its transfer token (None: a bad ``.dockerignore`` or an
    unreadable context, said on stderr)."""
    import tempfile

    from protocols.dockerfile import DockerfileError, parse_dockerignore
    from runtime.build_context import BuildContextError, write_context_tar

    try:
        with open(os.path.join(context, ".dockerignore")) as f:
            ignore_text = f.read()
    except FileNotFoundError:
        ignore_text = ""
    try:
        ignore = parse_dockerignore(ignore_text)
    except DockerfileError as exc:
        print(f"corral: {exc}", file=sys.stderr)
        return None
    with tempfile.TemporaryFile() as spool:
        try:
            write_context_tar(context, ignore, spool, keep=frozenset(keep))
        except (BuildContextError, OSError) as exc:
            print(f"corral: unable to prepare context: {exc}", file=sys.stderr)
            return None
        spool.seek(0)
        token = None
        while True:
            chunk = spool.read(UPLOAD_CHUNK)
            if not chunk and token is not None:
                return token
            token = daemon.call("transfer.write", data=chunk, transfer=token)
            if not chunk:
                return token


def _show(items: Iterator[Any], quiet: bool, out) -> int:
    image_id = None
    for item in items:
        if "aux" in item:
            image_id = item["aux"].get("ID")
        elif "stream" in item and not quiet:
            out.write(item["stream"])
            out.flush()
    if quiet and image_id:
        print(image_id, file=out)
    return 0


async def cmd_build(client, args) -> int:
    """The build verb of ``commands.main`` (``corral`` itself routes build to ``main``): the
    same build, on a connection of its own, in a worker thread."""
    import anyio.to_thread
    return await anyio.to_thread.run_sync(run_build, args)


async def cmd_commit(client, args) -> int:
    reply = await client.call("image.commit", id=args.container, reference=args.reference, author=args.author,
                              message=args.message, changes=args.change, pause=args.pause)
    print(reply["Id"])
    return 0


VERBS = {"build": cmd_build, "commit": cmd_commit}
