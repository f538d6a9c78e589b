"""``corral build`` and ``corral commit``: the CLI side of supervisor/build.py and commit.py.

``build`` runs on its own: ``cli.py`` hands it the arguments before any other
verb's module is imported. It makes one streaming request, so it speaks the
RPC over a blocking socket with ``protocols.rpc`` (``_Daemon``), with no event
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
import socket
import sys
from collections.abc import Iterator
from typing import Any, Self

DEFAULT_HOST = "unix:///run/corral/corral.sock"     # commands.DEFAULT_HOST (not imported: start-up time)
CLIENT_AGENT = "corral-build/0.1.0"
CONTEXT_UNAVAILABLE = "context_unavailable"          # build.CONTEXT_UNAVAILABLE (the daemon's side)
UPLOAD_CHUNK = 512 << 10                             # a transfer.write frame stays under the 1 MiB limit
_RECEIVE_SIZE = 65536


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


# ---------------------------------------------------------------- the daemon, blocking


class DaemonError(Exception):
    """The daemon answered a request with an error (``code``, ``message``, ``details``)."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.details = code, message, details or {}


class ConnectionLost(ConnectionError):
    """The connection to the daemon ended, or the daemon sent something that is not the protocol."""


class _Daemon:
    """One blocking connection to the daemon: the hello, then one request at a time.

    The sans-IO ``protocols.rpc`` does the framing (STYLE.md: the adapter stays
    boring); a CLI that makes one request after another needs no reader task.
    Leaving a ``stream`` early closes the connection, which cancels it on the daemon.

    Raises:
        OSError: the socket cannot be reached. DaemonError: the hello was refused.
        ConnectionLost: the daemon closed the connection or broke the protocol.
    """

    def __init__(self, path: str) -> None:
        from protocols import rpc
        self._rpc = rpc
        self._decoder = rpc.FrameDecoder(max_frame_size=rpc.MAX_RESPONSE_FRAME_SIZE)
        self._next_id = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.connect(path)
            offered = tuple(sorted(rpc.SUPPORTED_VERSIONS))
            self._send(rpc.ClientHello(offered, CLIENT_AGENT))
            reply = self._receive()
            if isinstance(reply, rpc.Error):
                raise DaemonError(reply.code, reply.message, reply.details)
            if not isinstance(reply, rpc.ServerHello) or reply.version not in offered:
                raise ConnectionLost(f"the daemon did not answer the hello: {reply!r}")
        except BaseException:
            self._sock.close()
            raise

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, message: Any) -> None:
        rpc = self._rpc
        try:
            frame = rpc.encode_message(message, max_frame_size=rpc.MAX_REQUEST_FRAME_SIZE)
        except rpc.LocalProtocolError as exc:       # a Dockerfile over 1 MiB, say
            raise DaemonError("BAD_REQUEST", f"the request cannot be sent: {exc}") from None
        self._sock.sendall(frame)

    def _receive(self) -> Any:
        rpc = self._rpc
        try:
            while True:
                message = self._decoder.next_message()
                if message is rpc.CLOSED:
                    raise ConnectionLost("the daemon closed the connection")
                if message is not rpc.NEED_DATA:
                    break
                self._decoder.receive_data(self._sock.recv(_RECEIVE_SIZE))
        except rpc.RemoteProtocolError as exc:
            raise ConnectionLost(f"the daemon sent an invalid frame: {exc}") from None
        if isinstance(message, rpc.Error) and message.id is None:
            raise ConnectionLost(f"the daemon closed the connection: {message.code}: {message.message}")
        return message

    def _request(self, method: str, params: dict[str, Any]) -> int:
        self._next_id += 1
        self._send(self._rpc.Request(self._next_id, method, params))
        return self._next_id

    def _answer(self, request_id: int) -> Any:
        message = self._receive()
        if getattr(message, "id", None) != request_id:
            raise ConnectionLost(f"the daemon answered a request that was not made: {message!r}")
        if isinstance(message, self._rpc.Error):
            raise DaemonError(message.code, message.message, message.details)
        return message

    def call(self, method: str, /, **params: Any) -> Any:
        """A unary method's result.

        Raises:
            DaemonError, ConnectionLost, OSError.
        """
        message = self._answer(self._request(method, params))
        if not isinstance(message, self._rpc.Response):
            raise ConnectionLost(f"{method} streamed where a result was expected")
        return message.result

    def stream(self, method: str, /, **params: Any) -> Iterator[Any]:
        """A streaming method's items, until its end.

        Raises:
            DaemonError, ConnectionLost, OSError.
        """
        request_id = self._request(method, params)
        while True:
            message = self._answer(request_id)
            if isinstance(message, self._rpc.Item):
                yield message.item
            elif isinstance(message, self._rpc.End):
                return
            else:
                raise ConnectionLost(f"{method} answered with a result where items were expected")


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
        with _Daemon(host.removeprefix("unix://")) as daemon:
            try:
                if not upload:
                    local = {"path": context, "device": st.st_dev, "inode": st.st_ino, "keep": keep}
                    try:
                        return _show(daemon.stream("image.build", context=local, **params), args.quiet, out)
                    except DaemonError as exc:
                        if not _upload_instead(exc):
                            raise
                token = _upload_context(daemon, context, keep)
                if token is None:
                    return 1
                return _show(daemon.stream("image.build", transfer=token, **params), args.quiet, out)
            except DaemonError as exc:
                out.flush()
                print(f"corral: {exc.message}", file=sys.stderr)
                return 1
    except (OSError, ConnectionLost, DaemonError) as exc:
        out.flush()
        print(f"corral: cannot talk to the daemon at {host}: {exc}", file=sys.stderr)
        return 125


def _upload_instead(exc: DaemonError) -> bool:
    """Rule 2: the daemon cannot read the context where we named it, or knows no ``context`` param."""
    if exc.details.get("reason") == CONTEXT_UNAVAILABLE:
        return True
    return exc.code == "BAD_REQUEST" and exc.message.startswith("bad params for image.build")


def _upload_context(daemon: _Daemon, context: str, keep: list[str]) -> str | None:
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
