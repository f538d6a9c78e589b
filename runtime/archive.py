"""Files inside a container root: paths resolved in it, tar streams out of it and into it, its changes.

What ``corral cp``, ``export`` and ``diff`` need from the kernel, synchronous
and without trio (``supervisor/files.py`` runs it in worker threads).

Rules this module lives by:

1. A path given by the user is cleaned lexically first, as Docker does
   (``filepath.Clean("/" + path)``): a ``..`` of the user's stops at the root.
   Symlinks met on the way are then resolved *inside* the root: an absolute
   target starts again at the root, a relative one from its directory; a
   relative target that climbs above the root is refused (``PathEscapes``),
   never clamped, so nobody copies ``/etc/passwd`` of the container believing
   it is what the link pointed at. ``resolve_in_root`` is pure, tested
   without root.
2. Nothing is ever opened through a symlink. After resolving, every directory
   is opened component by component with ``O_NOFOLLOW`` from a descriptor of
   the root, and every entry read or written with the ``*at`` calls on its
   parent's descriptor. A running container can swap a directory for a symlink
   between our resolve and our open; then the open fails (``ELOOP``) instead
   of following it onto the host.
3. Regular files are opened ``O_NONBLOCK``, then checked with ``fstat``: a file
   swapped for a FIFO never blocks a worker thread.
4. Tar streams are produced lazily (``TarStream.read``): memory stays at one
   chunk whatever the size of the tree, and a reader that stops reading
   stops the walk.
5. A stopped container's files are where its processes would find them:
   ``open_container_root`` mounts its binds (volumes, ``-v`` binds, the /etc
   files) over its overlay in a mount namespace of their own, so a copy to
   or from a volume's path reaches the volume, as in a running container
   (seen through /proc/PID/root) and as in Docker. Nobody else sees those
   mounts, and they go when the ``Root`` is closed (or the process dies).

Rejected: ``openat2(RESOLVE_IN_ROOT)``. It clamps escaping symlinks instead of
refusing them (rule 1), and needs a ctypes wrapper for Linux 5.6+.
Rejected for rule 5: resolving the mounts ourselves (a table of
destinations consulted at every step). Every walk here (resolve, tar out,
the unpacker) would need it, and a file bind or a mount inside a directory
being copied would still be missed; the kernel's own mount crossing gets
all of them right. Rejected: mounting the binds on the overlay in the
daemon's namespace (moby's ``mountVolumes``): a container started meanwhile
would inherit them, and a crash would leave them behind.
Rejected: ``tarfile.TarFile.add``. It opens paths (following symlinks in the
parents) and writes a member's data in one go, and its output must be
buffered whole before it can be read.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from protocols.runtime_spec import Spec

from . import _syscalls, rootfs
from .errors import HostError
from .layers import OVERLAY_OPAQUE_XATTR, WHITEOUT_PREFIX, LayerError, _Unpacker, clean_entry_name, open_decompressed

MAX_SYMLINKS = 40              # Linux's limit in path resolution (path_resolution(7))
_BLOCK = tarfile.BLOCKSIZE     # 512
_CHUNK = 1 << 20
_PAX_XATTR = "SCHILY.xattr."
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class ArchiveError(HostError):
    """A path could not be read from, or written into, a container root."""


class PathEscapes(ArchiveError):
    """A symlink on the path points outside the container root."""


class PathNotFound(ArchiveError):
    """A path (or one of its parents) does not exist in the container root."""


class CopyConflict(ArchiveError):
    """An entry would replace a directory with a non-directory or the reverse."""


# ---------------------------------------------------------------- paths (pure)


def clean_path(path: str) -> list[str]:
    """``path`` as components below the root, ``..`` clamped at the root (Go's ``Clean("/" + path)``).

    ``"/a/./b/../c"`` -> ``["a", "c"]``; ``"../../etc"`` -> ``["etc"]``; ``""`` and ``"/"`` -> ``[]``.
    """
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        out.append(part)
    return out


def resolve_in_root(path: str, readlink: Callable[[tuple[str, ...]], str | None], *,
                    follow_final: bool = False) -> list[str]:
    """Resolve ``path`` inside a root whose entries ``readlink`` describes (rule 1).

    Args:
        path: as the user gave it; cleaned by ``clean_path`` first.
        readlink: ``parts -> target`` for a symlink, ``None`` for anything
            else; raises ``FileNotFoundError`` (or ``NotADirectoryError``)
            when the entry is missing.
        follow_final: resolve a symlink in the last component too (a path
            ending in ``/`` or ``/.`` means its directory, so callers pass True).

    Returns:
        The components of the resolved path; the last one may not exist.

    Raises:
        PathEscapes: a relative symlink target climbs above the root.
        PathNotFound: a directory on the way does not exist or is not a directory.
        ArchiveError: more than ``MAX_SYMLINKS`` links (a loop).
    """
    resolved: list[str] = []
    pending = clean_path(path)
    pending.reverse()                      # a stack: the next component last
    links = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            # Only a symlink target puts ".." here (the user's were cleaned away).
            if not resolved:
                raise PathEscapes(f"path {path!r} leaves the container's root through a symlink")
            resolved.pop()
            continue
        candidate = (*resolved, part)
        final = not pending
        if final and not follow_final:
            resolved.append(part)
            break
        try:
            target = readlink(candidate)
        except (FileNotFoundError, NotADirectoryError):
            if final:
                resolved.append(part)
                break
            raise PathNotFound(f"no such file or directory: /{'/'.join(candidate)}") from None
        if target is None:
            resolved.append(part)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise ArchiveError(f"too many levels of symbolic links in {path!r}")
        if target.startswith("/"):
            resolved = []                  # absolute targets mean the container's root
        pending.extend(reversed(target.split("/")))
    return resolved


# Go's os.FileMode bits, which Docker's path stat (X-Docker-Container-Path-Stat) carries.
_GO_DIR, _GO_SYMLINK, _GO_DEVICE, _GO_PIPE, _GO_SOCKET = 1 << 31, 1 << 27, 1 << 26, 1 << 25, 1 << 24
_GO_SETUID, _GO_SETGID, _GO_CHARDEV, _GO_STICKY = 1 << 23, 1 << 22, 1 << 21, 1 << 20


def go_file_mode(st_mode: int) -> int:
    """A ``st_mode`` as Go's ``os.FileMode`` (type bits at the top, then setuid/setgid/sticky, then 0o777)."""
    mode = st_mode & 0o777
    kind = stat.S_IFMT(st_mode)
    mode |= {stat.S_IFDIR: _GO_DIR, stat.S_IFLNK: _GO_SYMLINK, stat.S_IFBLK: _GO_DEVICE,
             stat.S_IFCHR: _GO_DEVICE | _GO_CHARDEV, stat.S_IFIFO: _GO_PIPE, stat.S_IFSOCK: _GO_SOCKET}.get(kind, 0)
    if st_mode & stat.S_ISUID:
        mode |= _GO_SETUID
    if st_mode & stat.S_ISGID:
        mode |= _GO_SETGID
    if st_mode & stat.S_ISVTX:
        mode |= _GO_STICKY
    return mode


def is_dir_go_mode(mode: int) -> bool:
    return bool(mode & _GO_DIR)


def _rfc3339_nano(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}Z"


# ---------------------------------------------------------------- a root, by descriptor


class Root:
    """A directory tree reached only through descriptors (rule 2). Close it, or use ``with``."""

    def __init__(self, path: Path | str) -> None:
        try:
            # Followed: the root itself is ours to name (a directory, or /proc/PID/root).
            self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise ArchiveError(f"cannot open the container root {path}: {exc.strerror}") from exc
        self.path = str(path)
        self._namespace = -1         # the mount namespace of its mounts (open_container_root), kept alive

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self._namespace >= 0:
            os.close(self._namespace)            # the last reference: its mounts go with it
            self._namespace = -1

    def __enter__(self) -> Root:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open_dir(self, parts: list[str] | tuple[str, ...]) -> int:
        """A new descriptor of directory ``parts``, never through a symlink.

        Raises:
            FileNotFoundError, NotADirectoryError; OSError(ELOOP): a component is a symlink.
        """
        fd = os.dup(self.fd)
        try:
            for part in parts:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def readlink(self, parts: tuple[str, ...]) -> str | None:
        """For ``resolve_in_root``: the symlink target at ``parts``, or None."""
        parent = self.open_dir(parts[:-1])
        try:
            st = os.lstat(parts[-1], dir_fd=parent)
            return os.readlink(parts[-1], dir_fd=parent) if stat.S_ISLNK(st.st_mode) else None
        finally:
            os.close(parent)

    def resolve(self, path: str, *, follow_final: bool = False) -> list[str]:
        try:
            return resolve_in_root(path, self.readlink, follow_final=follow_final)
        except OSError as exc:
            raise _os_error(path, exc) from None

    def lstat(self, parts: list[str]) -> os.stat_result:
        """lstat of ``parts`` (the root itself for ``[]``).

        Raises:
            PathNotFound; ArchiveError.
        """
        try:
            if not parts:
                return os.fstat(self.fd)
            parent = self.open_dir(parts[:-1])
            try:
                return os.lstat(parts[-1], dir_fd=parent)
            finally:
                os.close(parent)
        except OSError as exc:
            raise _os_error("/" + "/".join(parts), exc) from None


def open_container_root(path: Path | str, spec: Spec, *, bundle: str) -> Root:
    """The root of a stopped container at ``path`` (its mounted overlay) with its binds over it (rule 5).

    The mounts are made by a short-lived thread of our own: it unshares its
    mount namespace (unshare(2): CLONE_NEWNS implies CLONE_FS, which a thread
    may unshare on its own), makes every mount in it private so nothing
    propagates back to the host, mounts the binds (``rootfs.mount_binds``),
    opens the root and the namespace, and exits. The namespace lives on
    through its descriptor; lookups from the root's descriptor cross its
    mounts whichever thread makes them, as they do through /proc/PID/root.

    Raises:
        ArchiveError: the root or a bind could not be mounted or opened (a
            bind's source is gone, say); nothing is left behind.
    """
    made: list[Root] = []
    failed: list[BaseException] = []

    def in_own_namespace() -> None:
        try:
            _syscalls.unshare(_syscalls.CLONE_NEWNS)
            _syscalls.mount(None, "/", None, _syscalls.MS_REC | _syscalls.MS_PRIVATE)
            rootfs.mount_binds(spec, str(path), bundle=bundle)
            root = Root(path)
            try:
                root._namespace = os.open("/proc/thread-self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
            except BaseException:
                root.close()
                raise
            made.append(root)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=in_own_namespace, name="corral cp mounts")
    thread.start()
    thread.join()
    if failed:
        exc = failed[0]
        if isinstance(exc, ArchiveError):
            raise exc
        if isinstance(exc, (HostError, OSError)):
            raise ArchiveError(f"cannot mount the container's volumes over {path}: {exc}") from exc
        raise exc
    return made[0]


def _os_error(path: str, exc: OSError) -> ArchiveError:
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return PathNotFound(f"no such file or directory: {path}")
    if exc.errno == errno.ELOOP:
        return ArchiveError(f"{path}: a directory on the way was replaced by a symlink")
    return ArchiveError(f"{path}: {exc.strerror or exc}")


def wants_directory(path: str) -> bool:
    """A path ending in ``/`` or ``/.`` names a directory, so its last symlink is followed (Docker's rule)."""
    return path.endswith("/") or path.endswith("/.") or path == "."


def path_stat(root: Root, path: str) -> tuple[list[str], dict]:
    """Docker's container path stat (``HEAD /containers/{id}/archive``) of ``path``.

    Returns:
        ``(resolved parts, {"name", "size", "mode", "mtime", "linkTarget"})``;
        ``mode`` is Go's FileMode, ``linkTarget`` the resolved path of a symlink
        (inside the container) or "".

    Raises:
        PathNotFound, PathEscapes, ArchiveError.
    """
    parts = root.resolve(path, follow_final=wants_directory(path))
    return parts, entry_stat(root, parts)


def entry_stat(root: Root, parts: list[str]) -> dict:
    """``path_stat`` of an already resolved path."""
    st = root.lstat(parts)
    link_target = ""
    if stat.S_ISLNK(st.st_mode):
        try:
            link_target = "/" + "/".join(root.resolve("/" + "/".join(parts), follow_final=True))
        except ArchiveError:
            link_target = ""
    name = parts[-1] if parts else "/"
    return {"name": name, "size": st.st_size, "mode": go_file_mode(st.st_mode),
            "mtime": _rfc3339_nano(st.st_mtime_ns), "linkTarget": link_target}


# ---------------------------------------------------------------- tar out (rule 4)


class ChunkReader:
    """A binary reader (``read(n)``, ``close()``) over an iterator of byte strings, made as it is read.

    ``close`` closes a generator, so the descriptors its ``finally`` blocks hold go with it.
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks: Iterator[bytes] | None = chunks
        self._buf = bytearray()

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all that is left for -1); ``b""`` at the end."""
        while self._chunks is not None and (size < 0 or len(self._buf) < size):
            chunk = next(self._chunks, None)
            if chunk is None:
                self._chunks = None
            else:
                self._buf += chunk
        if size < 0:
            size = len(self._buf)
        out = bytes(self._buf[:size])
        del self._buf[:size]
        return out

    def close(self) -> None:
        if self._chunks is not None:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
            self._chunks = None


class TarStream(ChunkReader):
    """A tar of one entry of a root (and everything below it), produced as it is read.

    Entries are named ``arcname`` and ``arcname/...``; with ``arcname`` "" the
    entry must be a directory and only its children are in the tar, by their own
    names (an export, or ``cp dir/.``). Owners are numeric, times whole seconds,
    xattrs as PAX ``SCHILY.xattr.*``, hard links within the stream as links.
    Sockets are skipped (Docker skips them too). ``read`` raises ArchiveError
    when an entry vanished or could not be read.

    Args:
        root: the tree; borrowed, it must stay open until ``close``.
        parts: the entry, resolved (``Root.resolve``).
        arcname: its name in the tar.
        skip: directories (absolute paths in the root) put in the tar without
            their contents: a running container's /proc, /sys and /dev.
    """

    def __init__(self, root: Root, parts: list[str], arcname: str, *, skip: frozenset[str] = frozenset()) -> None:
        self._root = root
        self._parts = parts
        self._skip = skip
        self._arcname = arcname.strip("/")
        self._inodes: dict[tuple[int, int], str] = {}
        super().__init__(self._generate())

    def _generate(self) -> Iterator[bytes]:
        parts = self._parts
        if not parts or not self._arcname:
            # The root, or a directory's contents: its children, under arcname (if any).
            try:
                fd = self._root.open_dir(parts)
            except OSError as exc:
                raise _os_error("/" + "/".join(parts), exc) from None
            try:
                if self._arcname:
                    yield self._header(self._arcname, os.fstat(fd), None, "", fd=fd)
                yield from self._walk(fd, self._arcname + "/" if self._arcname else "", "/" + "/".join(parts))
            finally:
                os.close(fd)
        else:
            try:
                parent = self._root.open_dir(parts[:-1])
            except OSError as exc:
                raise _os_error("/" + "/".join(parts), exc) from None
            try:
                yield from self._entry(parent, parts[-1], self._arcname, "/" + "/".join(parts), top=True)
            finally:
                os.close(parent)
        yield b"\0" * (2 * _BLOCK)       # end of archive

    def _walk(self, dir_fd: int, prefix: str, path: str) -> Iterator[bytes]:
        # Byte order, not locale order: the same output on every host.
        for name in sorted(os.listdir(dir_fd), key=os.fsencode):
            yield from self._entry(dir_fd, name, prefix + name, f"{path.rstrip('/')}/{name}", top=False)

    def _entry(self, parent: int, name: str, arcname: str, path: str, *, top: bool) -> Iterator[bytes]:
        try:
            st = os.lstat(name, dir_fd=parent)
        except FileNotFoundError:
            if top:
                raise PathNotFound(f"no such file or directory: {arcname}") from None
            return                                  # removed while we walk: skip it
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFSOCK:
            return
        if kind == stat.S_IFDIR:
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR) and not top:
                    return                          # replaced while we walk (rule 2)
                raise _os_error(arcname, exc) from None
            try:
                yield self._header(arcname, os.fstat(fd), None, "", fd=fd)
                if path not in self._skip:
                    yield from self._walk(fd, arcname + "/", path)
            finally:
                os.close(fd)
            return
        if kind != stat.S_IFLNK and st.st_nlink > 1:
            first = self._inodes.setdefault((st.st_dev, st.st_ino), arcname)
            if first != arcname:
                yield self._header(arcname, st, tarfile.LNKTYPE, first, parent=parent, name=name)
                return
        if kind == stat.S_IFREG:
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ELOOP) and not top:
                    return
                raise _os_error(arcname, exc) from None
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):    # swapped meanwhile (rule 3)
                    return
                yield self._header(arcname, st, None, "", fd=fd)
                yield from _file_data(fd, st.st_size)
            finally:
                os.close(fd)
        elif kind == stat.S_IFLNK:
            yield self._header(arcname, st, None, os.readlink(name, dir_fd=parent), parent=parent, name=name)
        else:
            yield self._header(arcname, st, None, "", parent=parent, name=name)

    def _header(self, arcname: str, st: os.stat_result, kind: bytes | None, linkname: str, *,
                fd: int | None = None, parent: int | None = None, name: str = "") -> bytes:
        info = tarfile.TarInfo(arcname + "/" if stat.S_ISDIR(st.st_mode) else arcname)
        mode = stat.S_IFMT(st.st_mode)
        if kind is None:
            kind = {stat.S_IFDIR: tarfile.DIRTYPE, stat.S_IFREG: tarfile.REGTYPE, stat.S_IFLNK: tarfile.SYMTYPE,
                    stat.S_IFCHR: tarfile.CHRTYPE, stat.S_IFBLK: tarfile.BLKTYPE,
                    stat.S_IFIFO: tarfile.FIFOTYPE}[mode]
        info.type = kind
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname = info.gname = ""
        info.mtime = int(st.st_mtime)
        info.linkname = linkname
        if kind == tarfile.REGTYPE:
            info.size = st.st_size
        if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        target = fd if fd is not None else f"/proc/self/fd/{parent}/{name}"
        info.pax_headers = {_PAX_XATTR + k: v for k, v in _xattrs(target).items()}
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _file_data(fd: int, size: int) -> Iterator[bytes]:
    """Exactly ``size`` bytes of the file (zeros if it shrank meanwhile), padded to a block."""
    left = size
    while left > 0:
        chunk = os.read(fd, min(_CHUNK, left))
        if not chunk:
            chunk = b"\0" * min(_CHUNK, left)
        left -= len(chunk)
        yield chunk
    if size % _BLOCK:
        yield b"\0" * (_BLOCK - size % _BLOCK)


def _xattrs(target: int | str) -> dict[str, str]:
    follow = isinstance(target, int)
    try:
        names = os.listxattr(target, follow_symlinks=follow) if not follow else os.listxattr(target)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOENT, errno.EPERM):
            return {}
        raise
    out = {}
    for key in sorted(names):
        if key.startswith("trusted.overlay."):
            continue
        try:
            value = os.getxattr(target, key) if follow else os.getxattr(target, key, follow_symlinks=False)
        except OSError:
            continue                       # removed meanwhile, or not ours to read
        out[key] = value.decode("utf-8", "surrogateescape")
    return out


# ---------------------------------------------------------------- tar in


class _CopyUnpacker(_Unpacker):
    """layers' safe unpacker for ``cp``: ``.wh.*`` names are plain files, and with
    ``no_overwrite_dir_non_dir`` a directory and a non-directory never replace each other."""

    oci_whiteouts = False

    def __init__(self, root_fd: int, *, same_owner: bool, no_overwrite_dir_non_dir: bool) -> None:
        super().__init__(root_fd, same_owner=same_owner)
        self.no_overwrite = no_overwrite_dir_non_dir

    def add(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        parts = clean_entry_name(member.name)
        if self.no_overwrite and parts:
            try:
                parent = self._open_dir(parts[:-1], create=False, entry=member.name)
            except (FileNotFoundError, NotADirectoryError):
                parent = None
            if parent is not None:
                try:
                    existing = os.lstat(parts[-1], dir_fd=parent)
                except FileNotFoundError:
                    existing = None
                finally:
                    os.close(parent)
                if existing is not None and stat.S_ISDIR(existing.st_mode) != member.isdir():
                    what = "a directory with a non-directory" if stat.S_ISDIR(existing.st_mode) \
                        else "a non-directory with a directory"
                    raise CopyConflict(f"cannot overwrite {what}: {member.name}")
        super().add(member, tar)


def extract_into(root: Root, parts: list[str], source: BinaryIO, *, same_owner: bool,
                 no_overwrite_dir_non_dir: bool = True,
                 rename: Callable[[str], str | None] | None = None) -> None:
    """Unpack a tar (plain or compressed) into the existing directory ``parts`` of ``root``.

    Entries are written as ``runtime.layers`` writes a layer (never through a
    symlink, no ``..``, hard links only to earlier entries), except that
    ``.wh.`` names are ordinary files here.

    Args:
        same_owner: keep the entries' uid/gid (``cp -a``); else the files are the caller's (root's).
        no_overwrite_dir_non_dir: refuse an entry that would replace a
            directory with a non-directory or the reverse (Docker's ``noOverwriteDirNonDir``).
        rename: maps each entry name (and hard link target) to the name to write,
            None to skip the entry (``cp`` rebases the top entry onto the destination's name).

    Raises:
        PathNotFound: ``parts`` is missing; ArchiveError: not a directory, or
        an unsafe, malformed or conflicting entry (the message names it).
    """
    st = root.lstat(parts)
    if not stat.S_ISDIR(st.st_mode):
        raise ArchiveError(f"extraction point /{'/'.join(parts)} is not a directory")
    try:
        fd = root.open_dir(parts)
    except OSError as exc:
        raise _os_error("/" + "/".join(parts), exc) from None
    try:
        unpacker = _CopyUnpacker(fd, same_owner=same_owner, no_overwrite_dir_non_dir=no_overwrite_dir_non_dir)
        with open_decompressed(source) as stream:
            try:
                with tarfile.open(fileobj=stream, mode="r|", encoding="utf-8", errors="surrogateescape") as tar:
                    for member in tar:
                        if rename is not None:
                            name = rename(member.name)
                            if name is None:
                                continue
                            member.name = name
                            if member.islnk():
                                member.linkname = rename(member.linkname) or member.linkname
                        unpacker.add(member, tar)
            except (tarfile.TarError, EOFError) as exc:
                raise ArchiveError(f"malformed or truncated tar: {exc}") from exc
            except LayerError as exc:
                raise ArchiveError(str(exc).replace("layer entry", "tar entry")) from exc
            except OSError as exc:
                raise ArchiveError(f"failed to extract into /{'/'.join(parts)}: {exc.strerror or exc}") from exc
        unpacker.finish()
    finally:
        os.close(fd)


# ---------------------------------------------------------------- changes (docker diff)

CHANGE_MODIFY, CHANGE_ADD, CHANGE_DELETE = 0, 1, 2     # Docker's Kind values
KIND_LETTERS = {CHANGE_MODIFY: "C", CHANGE_ADD: "A", CHANGE_DELETE: "D"}


@dataclass(frozen=True)
class UpperEntry:
    """One entry of an overlay upper dir, as ``classify_changes`` needs it.

    Attributes:
        path: ``/a/b``, in walk order (a directory before its children).
        whiteout: a 0/0 character device: the lower entry was deleted.
        opaque: a directory with ``trusted.overlay.opaque=y``: the lower one was deleted and this one made.
        is_dir: a directory.
        in_lower: an entry of that path exists in a lower layer (and is visible: not under an opaque dir).
        same_as_lower: a directory whose size, mode and mtime equal the lower one's.
    """

    path: str
    whiteout: bool = False
    opaque: bool = False
    is_dir: bool = False
    in_lower: bool = False
    same_as_lower: bool = False


def classify_changes(entries: list[UpperEntry]) -> list[tuple[str, int]]:
    """moby's overlay changes walk (pkg/archive/changes.go), pure: ``[(path, kind)]``.

    - a whiteout, or an opaque directory over a lower one, is a deletion;
    - otherwise an entry is added, unless the path exists below: modified,
      except a directory whose metadata did not change (not listed at all);
    - the parent of an addition or a deletion is listed as modified, once,
      unless it already is (or is ``/``).
    """
    changes: list[tuple[str, int]] = []
    changed_dirs: set[str] = set()
    for e in entries:
        if e.whiteout or (e.opaque and e.in_lower):
            kind = CHANGE_DELETE
        elif e.in_lower:
            if e.is_dir and not e.opaque and e.same_as_lower:
                continue
            kind = CHANGE_MODIFY
        else:
            kind = CHANGE_ADD
        if e.is_dir:
            changed_dirs.add(e.path)
        if kind in (CHANGE_ADD, CHANGE_DELETE):
            parent = os.path.dirname(e.path)
            if parent != "/" and parent not in changed_dirs:
                changes.append((parent, CHANGE_MODIFY))
                changed_dirs.add(parent)
        changes.append((e.path, kind))
    return changes


def scan_upper(upper: Path, lowers: list[Path], *, skip: frozenset[str] = frozenset()) -> list[UpperEntry]:
    """Walk an overlay upper dir (sorted, parents first) into ``UpperEntry`` values.

    Args:
        lowers: the image's snapshot dirs (any order).
        skip: paths (``/etc/hostname``) left out, with everything below them.
    """
    out: list[UpperEntry] = []
    # The directories holding skipped paths were copied up to make them; by
    # themselves they are not a change (Docker keeps those paths in an init layer).
    holders = {os.path.dirname(p) for p in skip}
    while any(os.path.dirname(h) not in holders for h in holders if h != "/"):
        holders |= {os.path.dirname(h) for h in holders}

    def lower_stat(rel: str, hidden: bool) -> os.stat_result | None:
        if hidden:
            return None
        for lower in lowers:
            try:
                return os.lstat(os.path.join(lower, rel))
            except OSError:
                continue
        return None

    def walk(directory: str, prefix: str, hidden: bool) -> None:
        for name in sorted(os.listdir(directory), key=os.fsencode):
            path = f"{prefix}/{name}"
            if path in skip:
                continue
            full = os.path.join(directory, name)
            st = os.lstat(full)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                out.append(UpperEntry(path, whiteout=True))
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            opaque = is_dir and _is_opaque(full)
            lower = lower_stat(path.lstrip("/"), hidden)
            same = bool(is_dir and lower is not None and stat.S_ISDIR(lower.st_mode)
                        and (path in holders or (lower.st_size == st.st_size and lower.st_mode == st.st_mode
                                                 and int(lower.st_mtime) == int(st.st_mtime))))
            out.append(UpperEntry(path, opaque=opaque, is_dir=is_dir, in_lower=lower is not None,
                                  same_as_lower=same))
            if is_dir:
                walk(full, path, hidden or opaque)

    walk(os.fspath(upper), "", False)
    return out


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OVERLAY_OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


__all__ = [
    "CHANGE_ADD", "CHANGE_DELETE", "CHANGE_MODIFY", "KIND_LETTERS", "WHITEOUT_PREFIX",
    "ArchiveError", "CopyConflict", "PathEscapes", "PathNotFound", "Root", "TarStream", "UpperEntry",
    "classify_changes", "clean_path", "entry_stat", "extract_into", "go_file_mode", "is_dir_go_mode",
    "open_container_root", "path_stat",
    "resolve_in_root", "scan_upper", "wants_directory",
]
