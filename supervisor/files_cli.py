"""``corral cp``, ``diff``, ``export``, ``save``, ``load``: the CLI side of supervisor/files.py
(anyio's client: commands.py runs these verbs on it).

``cp`` decides where things land on the client, as the docker CLI does
(cli/command/container/cp.go and moby's archive.CopyInfoDestinationPath);
the daemon only answers stats, hands out tars and unpacks tars into an
existing directory:

- a file onto a missing path makes that file (its parent must exist; a path
  ending in ``/`` must be an existing directory); onto a file it overwrites
  it; into a directory it keeps its name;
- a directory onto a missing path makes that directory with the source's
  contents; into a directory it lands inside it, unless the source ends in
  ``/.``: then its *contents* are copied; onto a file it is an error;
- ``-`` is a tar stream: on stdout (from a container), or on stdin (into a
  container, whose destination must be a directory).

Ownership: as docker, files copied out belong to the user running ``cp``, and
files copied in to the container's root, unless ``-a`` keeps the source's
owners; modes and times are always kept.

Bytes move with ``transfer.read``/``transfer.write`` calls (files.py rule 3);
local tars are made and unpacked in a worker thread with ``runtime.archive``,
which calls back into the event loop for each chunk.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from typing import Any

from .blocking_client import RpcError
from .errors import CorralError, InvalidRequest

CHUNK = 512 << 10          # a transfer.write frame stays well under the 1 MiB request limit


def add_parsers(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("cp", help="copy files between a container and the local filesystem")
    sp.add_argument("-a", "--archive", action="store_true", help="keep the source's uid/gid")
    sp.add_argument("-L", "--follow-link", action="store_true", help="follow a symlink given as SRC_PATH")
    sp.add_argument("src", metavar="CONTAINER:SRC_PATH|SRC_PATH|-")
    sp.add_argument("dest", metavar="DEST_PATH|-|CONTAINER:DEST_PATH")
    sub.add_parser("diff", help="changes to a container's filesystem").add_argument("container")
    sp = sub.add_parser("save", help="images as a tar (docker-archive, or an OCI layout with --format oci)")
    sp.add_argument("-o", "--output", help="write to a file, not stdout")
    sp.add_argument("--format", choices=("docker", "oci"), default="docker", help="archive format (default docker)")
    sp.add_argument("images", nargs="+", metavar="IMAGE")
    sp = sub.add_parser("load", help="images from a tar made by save (docker-archive or OCI layout)")
    sp.add_argument("-i", "--input", help="read from a file, not stdin")
    sp.add_argument("-q", "--quiet", action="store_true", help="print nothing")
    sp = sub.add_parser("export", help="a container's filesystem as a tar")
    sp.add_argument("-o", "--output", help="write to a file, not stdout")
    sp.add_argument("container")


def split_cp_arg(arg: str) -> tuple[str | None, str]:
    """docker's ``splitCpArg``: ``CONTAINER:PATH`` -> (container, path); a local path -> (None, path).

    An absolute path, or one starting with ``.`` (``./a:b``), is always local.
    """
    if arg.startswith(("/", ".")) or ":" not in arg:
        return None, arg
    container, _, path = arg.partition(":")
    return container, path


class _RemoteTar:
    """A download as a blocking file for a worker thread: each ``read`` pulls chunks from the event loop."""

    def __init__(self, client, token: str) -> None:
        self._client, self._token = client, token
        self._buf = bytearray()
        self._eof = False
        self.received = 0

    def read(self, size: int = -1) -> bytes:
        import anyio.from_thread   # only cp needs it: ~18 ms of every CLI start-up otherwise

        while not self._eof and (size < 0 or len(self._buf) < size):
            chunk = anyio.from_thread.run(self._pull)
            if not chunk:
                self._eof = True
            self._buf += chunk
        size = len(self._buf) if size < 0 else size
        out = bytes(self._buf[:size])
        del self._buf[:size]
        return out

    async def _pull(self) -> bytes:
        chunk = await self._client.call("transfer.read", transfer=self._token, size=1 << 20)
        self.received += len(chunk)
        return chunk

    def readable(self) -> bool:
        return True


class _ReaderGone(Exception):
    """The pipe we write a tar to was closed (``export | head``)."""


async def _download(client, token: str, out) -> None:
    """Every chunk of a download into a binary file (stdout, -o FILE).

    Raises:
        _ReaderGone: the pipe was closed by its reader; the transfer is closed.
    """
    import anyio.to_thread      # here: only these verbs pay for it

    try:
        try:
            while chunk := await client.call("transfer.read", transfer=token, size=1 << 20):
                await anyio.to_thread.run_sync(out.write, chunk)
            await anyio.to_thread.run_sync(out.flush)
        except BrokenPipeError:
            # Like a process killed by SIGPIPE: quietly, and nothing more goes to that pipe.
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
            raise _ReaderGone() from None
    except BaseException:
        with anyio.CancelScope(shield=True):
            try:
                await client.call("transfer.close", transfer=token)
            except (RpcError, OSError, ConnectionError):
                pass
        raise


async def _upload(client, read) -> str:
    """Send what ``read(n)`` (blocking, run in a thread) returns until it is empty; the transfer token."""
    import anyio.to_thread      # here: only these verbs pay for it

    token = None
    while True:
        chunk = await anyio.to_thread.run_sync(read, CHUNK)
        if not chunk and token is not None:
            return token
        token = await client.call("transfer.write", data=chunk, transfer=token)
        if not chunk:
            return token


async def _container_stat(client, container: str, path: str) -> dict[str, Any] | None:
    try:
        return await client.call("container.archive_stat", id=container, path=path)
    except RpcError as exc:
        if exc.code == "NOT_FOUND" and "could not find the file" in exc.message:
            return None
        raise


def _rename(top: str | None, new_top: str | None):
    """A tar entry name mapper: ``top/...`` -> ``new_top/...``; ``new_top`` None strips ``top``
    (its own entry is skipped); ``top`` None prefixes every name with ``new_top``."""
    def rename(name: str) -> str | None:
        name = name.strip("/")
        if name.startswith("./"):
            name = name[2:]
        if top is None:
            return f"{new_top}/{name}" if name else new_top
        first, _, rest = name.partition("/")
        if first != top:
            return name                          # not under the top entry: leave it be
        if new_top is None:
            return rest or None
        return f"{new_top}/{rest}" if rest else new_top
    return rename


async def cmd_cp(client, args) -> int:
    src_container, src_path = split_cp_arg(args.src)
    dst_container, dst_path = split_cp_arg(args.dest)
    if src_container is not None and dst_container is not None:
        raise InvalidRequest("copying between containers is not supported")
    if src_container is None and dst_container is None:
        raise InvalidRequest("must specify at least one container source")
    if src_container is not None:
        return await _copy_out(client, src_container, src_path, dst_path, args)
    return await _copy_in(client, src_path, dst_container, dst_path, args)


async def _copy_out(client, container: str, path: str, dest: str, args) -> int:
    from runtime import archive   # tar work only where a verb needs it: keeps CLI start-up lean
    import anyio.to_thread

    if not path:
        raise InvalidRequest("a container path is required (CONTAINER:PATH)")
    if args.follow_link:
        info = await client.call("container.archive_stat", id=container, path=path)
        if info["mode"] & (1 << 27):                           # Go's ModeSymlink
            if not info["linkTarget"]:
                raise InvalidRequest(f"cannot follow {container}:{path}: the symlink leaves the container's root")
            path = info["linkTarget"]
    reply = await client.call("container.archive_get", id=container, path=path)
    info, token = reply["stat"], reply["transfer"]
    if dest == "-":
        try:
            await _download(client, token, sys.stdout.buffer)
        except _ReaderGone:
            return 1
        return 0
    src_is_dir = archive.is_dir_go_mode(info["mode"])
    top = None if info["name"] == "/" else info["name"]      # the root has no top entry
    try:
        dest_st = os.stat(dest)
    except FileNotFoundError:
        dest_st = None
    if dest_st is not None and stat.S_ISDIR(dest_st.st_mode):
        into = dest
        contents = top is None or archive.wants_directory(path) and path.endswith(".")
        rename = _rename(top, None) if contents and top is not None else (lambda n: n.strip("/") or None)
    elif dest_st is not None:
        if src_is_dir:
            await client.call("transfer.close", transfer=token)
            raise InvalidRequest(f"cannot copy a directory to a file: {dest}")
        into, rename = os.path.dirname(os.path.abspath(dest)), _rename(top, os.path.basename(dest))
    else:
        parent = os.path.dirname(os.path.abspath(dest))
        if (dest.endswith("/") and not src_is_dir) or not os.path.isdir(parent):
            await client.call("transfer.close", transfer=token)
            raise InvalidRequest(f"destination directory {dest if dest.endswith('/') else parent} does not exist")
        into, rename = parent, _rename(top, os.path.basename(os.path.abspath(dest)))
    remote = _RemoteTar(client, token)

    def extract() -> None:
        with archive.Root(os.path.realpath(into)) as root:
            archive.extract_into(root, [], remote, same_owner=args.archive and os.geteuid() == 0,
                                 no_overwrite_dir_non_dir=True, rename=rename)

    try:
        await anyio.to_thread.run_sync(extract)
    except archive.ArchiveError as exc:
        raise CorralError(f"copying to {dest}: {exc}") from None
    finally:
        if not remote._eof:
            await client.call("transfer.close", transfer=token)
    return 0


async def _copy_in(client, src: str, container: str, dest: str, args) -> int:
    from runtime import archive   # tar work only where a verb needs it: keeps CLI start-up lean
    if not dest:
        raise InvalidRequest("a container path is required (CONTAINER:PATH)")
    if src == "-":
        info = await client.call("container.archive_stat", id=container, path=dest)
        if not archive.is_dir_go_mode(info["mode"]):
            raise InvalidRequest(f'destination "{container}:{dest}" must be a directory')
        token = await _upload(client, sys.stdin.buffer.read)
        await client.call("container.archive_put", id=container, path=dest, transfer=token,
                          copy_uid_gid=args.archive)
        return 0
    local = os.path.abspath(src)
    try:
        st = os.stat(local) if args.follow_link else os.lstat(local)
    except FileNotFoundError:
        raise InvalidRequest(f"lstat {local}: no such file or directory") from None
    src_is_dir = stat.S_ISDIR(st.st_mode)
    contents = src_is_dir and (src.endswith("/.") or src == ".")
    parent, base = os.path.split(local.rstrip("/") or "/")
    if args.follow_link:
        parent, base = os.path.split(os.path.realpath(local))
    info = await _container_stat(client, container, dest)
    if info is not None and archive.is_dir_go_mode(info["mode"]):
        into, arcname = dest, ("" if contents else base)
    elif info is not None:
        if src_is_dir:
            raise InvalidRequest(f"cannot copy a directory to a file: {container}:{dest}")
        into, arcname = _dirname(dest), _basename(dest)
    else:
        if dest.endswith("/") and not src_is_dir:
            raise InvalidRequest(f"destination directory {container}:{dest} does not exist")
        into, arcname = _dirname(dest), _basename(dest)
    root = archive.Root(os.path.realpath(parent) if parent else "/")
    try:
        # arcname "" (a directory's contents into a directory): the children by their own names.
        tar = archive.TarStream(root, [base] if base else [], arcname)
        try:
            token = await _upload(client, tar.read)
        finally:
            tar.close()
    except archive.ArchiveError as exc:
        raise CorralError(f"copying {src}: {exc}") from None
    finally:
        root.close()
    await client.call("container.archive_put", id=container, path=into, transfer=token,
                      copy_uid_gid=args.archive)
    return 0


def _dirname(path: str) -> str:
    return os.path.dirname(path.rstrip("/")) or "/"


def _basename(path: str) -> str:
    return os.path.basename(path.rstrip("/"))


async def cmd_diff(client, args) -> int:
    from runtime import archive   # tar work only where a verb needs it: keeps CLI start-up lean
    for change in await client.call("container.changes", id=args.container):
        print(f"{archive.KIND_LETTERS.get(change['Kind'], '?')} {change['Path']}")
    return 0


async def cmd_export(client, args) -> int:
    if args.output is None and sys.stdout.isatty():
        print("corral: cowardly refusing to save to a terminal. Use the -o flag or redirect", file=sys.stderr)
        return 1
    reply = await client.call("container.export", id=args.container)
    return await _write_download(client, reply["transfer"], args.output)


async def cmd_save(client, args) -> int:
    if args.output is None and sys.stdout.isatty():
        print("corral: cowardly refusing to save to a terminal. Use the -o flag or redirect", file=sys.stderr)
        return 1
    reply = await client.call("image.save", names=args.images, format=args.format)
    return await _write_download(client, reply["transfer"], args.output)


async def cmd_load(client, args) -> int:
    if args.input is None and sys.stdin.isatty():
        print("corral: requested load from stdin, but stdin is empty", file=sys.stderr)
        return 1
    with (open(args.input, "rb") if args.input is not None else os.fdopen(os.dup(0), "rb")) as source:
        token = await _upload(client, source.read)
    for line in await client.call("image.load", transfer=token):
        if not args.quiet:
            print(line)
    return 0


async def _write_download(client, token: str, output: str | None) -> int:
    """A download to ``output`` (atomically: a temp file renamed) or to stdout."""
    if output is None:
        try:
            await _download(client, token, sys.stdout.buffer)
        except _ReaderGone:
            return 1
        return 0
    tmp = f"{output}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as out:
            await _download(client, token, out)
        os.replace(tmp, output)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return 0


VERBS = {"cp": cmd_cp, "diff": cmd_diff, "export": cmd_export, "save": cmd_save, "load": cmd_load}
