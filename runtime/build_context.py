"""The file work of ``build``: the context as an index, read-only views of images, COPY/ADD into a layer dir.

Blocking, no trio; ``supervisor/build.py`` calls these in worker threads.

- ``index_tar`` / ``index_directory``: the context, read once into a
  ``ContextIndex`` (rule 1): a client's tar upload, or a directory of this
  host that a local CLI names instead of uploading it.
- ``ContextIndex.resolve_sources``, ``.digest``, ``.materialize``: a COPY/ADD
  source found in the index, its cache key, and its files on disk when (and
  only when) the step must run.
- ``walk_context``, ``write_context_tar``: a directory read as the docker CLI
  sends it; the CLI's tar upload is written by the same walk.
- ``open_image_view``: an image's snapshots as one read-only tree (an overlay
  with lower dirs only; one snapshot is its own view), to resolve a COPY
  destination through the image's symlinks, read its /etc/passwd, or copy
  ``--from`` a stage.
- ``resolve_sources``, ``copy_sources``: COPY and ADD. Sources are resolved
  inside their root (a symlink leaving it is refused, never followed out),
  globs match one path component at a time, and the files travel as
  ``archive.TarStream`` -> ``archive.extract_into``, the same code as ``cp``.
  The layer dir receives the destination and its parents; a parent the image
  already has keeps the image's mode and owner.
- ``BuildCache``, ``FileHashes``: the step cache, and the digests of a context
  directory's files from earlier builds.

Rules of the context:

1. One pass makes the index: for each path its kind, mode, owner, size, the
   sha256 of its content, link target, device numbers (and a tar's xattrs).
   Nothing is unpacked then. A tar upload stays in its spool (a compressed one
   is decompressed into a second spool on the way), a directory where it is.
2. Names are checked as the layer unpacker checks them: no absolute name, no
   ``..``, nothing below a symlink or a file. A parent without an entry of its
   own is an implicit directory (0755, 0:0), as the unpacker would make it; a
   later entry of a name replaces the earlier one; a hard link is a copy of
   its target's entry; the root's own entry is ignored (rule 4).
3. A directory is read as the docker CLI tars it (``walk_context``): sorted,
   symlinks never followed, sockets skipped, ``.dockerignore`` applied (an
   excluded directory is not even walked unless a ``!`` pattern may bring
   something back; the ``keep`` files, the Dockerfile and ``.dockerignore``,
   go whatever it says), hard links as separate files, no xattrs. The CLI's
   tar is written by that same walk, so a context sent either way indexes
   the same and builds from the same cache.
4. A COPY/ADD source's cache key (``ContextIndex.digest``) is its resolved
   path and, for it (a file) or everything below it (a directory: its
   contents are copied, not itself), each entry's name relative to it, kind,
   mode, owner, size, content digest, link target, device and xattrs. Not
   the times: a touched file or a fresh checkout keeps the cache (Docker's
   and BuildKit's rule). A change of content, mode or owner, or a rename,
   below a source changes its key, and only its.
5. Only what a COPY/ADD that missed the cache needs is unpacked
   (``materialize``): the entries it names, everything below them and their
   parents, read from the spool or the directory, through the layer
   unpacker. A directory's file must still have the digest it was indexed
   with, or the step fails: the context changed during the build.
6. Digests of a directory's files are remembered between builds
   (``FileHashes``, as BuildKit's content hash cache) and trusted only while
   the file's device, inode, size, mtime and ctime are what they were. A file
   changed less than ``RACY_NS`` before it was hashed is not remembered: a
   write in the same timestamp tick would go unseen (git's racy-clean case).

Rules of COPY/ADD (Docker's):

1. A directory source copies its contents, not itself. A file copied to a path
   ending in ``/`` or to an existing directory lands inside it, else it is the
   path. Several sources (or a glob) need a destination ending in ``/``.
2. New files belong to 0:0 unless ``--chown``; modes and times are the source's.
   ADD unpacks a local tar (plain or compressed) into the destination,
   keeping the archive's owners.

Rejected: unpacking the whole context on every build and hashing a COPY's
sources by re-tarring them (what build did first: on an unchanged context,
two thirds of the daemon's time went to writing and reading back files no
step needed). Rejected: a Merkle tree of directory digests (BuildKit's): the
flat records of one source are hashed in microseconds at the sizes contexts
have, and one code path serves a file and a directory.
SPEC: hard links in the context arrive in a COPY as separate files (the index
keeps no link between entries), and a directory's xattrs are not read (the
CLI's tar never carried them).
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import fnmatch
import hashlib
import json
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, Self

from . import _syscalls
from .archive import (
    ArchiveError,
    ChunkReader,
    PathNotFound,
    Root,
    TarStream,
    clean_path,
    extract_into,
    resolve_in_root,
)
from .errors import HostError
from .layers import LayerError, clean_entry_name, detect_compression, open_decompressed
from .overlay import escape_path

_GLOB_CHARS = frozenset("*?[")
_CHUNK = 1 << 20
_BLOCK = tarfile.BLOCKSIZE
_PAX_XATTR = "SCHILY.xattr."
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class BuildContextError(HostError):
    """A COPY/ADD or context operation failed; the message says which path and why."""


class ContextNotVisible(BuildContextError):
    """The directory a client named is not the one this host has at that path (another mount
    namespace or file system): the client should send the context as a tar instead."""


# ---------------------------------------------------------------- the context index

FILE, DIR, SYMLINK, FIFO, CHAR, BLOCK = "file", "dir", "symlink", "fifo", "char", "block"
_KIND_OF_MODE = {stat.S_IFREG: FILE, stat.S_IFDIR: DIR, stat.S_IFLNK: SYMLINK, stat.S_IFIFO: FIFO,
                 stat.S_IFCHR: CHAR, stat.S_IFBLK: BLOCK}
_TAR_TYPE = {FILE: tarfile.REGTYPE, DIR: tarfile.DIRTYPE, SYMLINK: tarfile.SYMTYPE, FIFO: tarfile.FIFOTYPE,
             CHAR: tarfile.CHRTYPE, BLOCK: tarfile.BLKTYPE}


@dataclass(frozen=True, slots=True)
class ContextEntry:
    """One path of the build context, as its cache key sees it and as it is unpacked (rule 1).

    Attributes:
        kind: ``file``, ``dir``, ``symlink``, ``fifo``, ``char`` or ``block``.
        mode: the permission bits with setuid, setgid and sticky (``S_IMODE``).
        size, digest: a file's length and ``sha256:<hex>`` of its bytes.
        linkname: a symlink's target, as written.
        device: a device node's (major, minor).
        xattrs: a tar entry's PAX xattrs, sorted (a directory's are not read).
        mtime_ns: kept when unpacked, not part of the key (rule 4).
        offset: where a file's bytes start in the tar spool; -1 for a directory's file.
    """

    kind: str
    mode: int
    uid: int
    gid: int
    size: int = 0
    digest: str = ""
    linkname: str = ""
    device: tuple[int, int] = (0, 0)
    xattrs: tuple[tuple[str, str], ...] = ()
    mtime_ns: int = 0
    offset: int = -1

    def record(self, name: str) -> bytes:
        """What the cache key hashes of this entry under ``name`` (rule 4): one JSON line, times left out."""
        doc = [name, self.kind, self.mode, self.uid, self.gid, self.size, self.digest, self.linkname,
               list(self.device), [list(x) for x in self.xattrs]]
        return json.dumps(doc, separators=(",", ":")).encode("ascii") + b"\n"


_IMPLICIT_DIR = ContextEntry(DIR, 0o755, 0, 0)     # a parent without an entry; the root (rule 2)


class _Tree(Protocol):
    """What ``resolve_sources`` needs of a tree: a directory on disk (``_RootTree``) or a ``ContextIndex``."""

    def resolve(self, path: str, *, follow_final: bool = False) -> list[str]: ...
    def is_dir(self, parts: list[str]) -> bool: ...           # PathNotFound when missing
    def listdir(self, parts: list[str]) -> list[str]: ...     # OSError when not a directory


class _Source(Protocol):
    """Where a ``ContextIndex``'s file bytes are: its tar spool or its directory."""

    def data(self, key: tuple[str, ...], entry: ContextEntry) -> Iterator[bytes]: ...
    def close(self) -> None: ...


class ContextIndex:
    """The build context as path -> ``ContextEntry`` (rules 1, 2), and where its bytes are.

    Made by ``index_tar`` or ``index_directory``; owns their spool or directory
    descriptor until ``close``. Entries are keyed by path components (``("a", "b")``);
    the root is not an entry.
    """

    def __init__(self, entries: dict[tuple[str, ...], ContextEntry], source: _Source) -> None:
        self.entries = entries
        self._source = source
        self._keys: list[tuple[str, ...]] | None = None
        self._children: dict[tuple[str, ...], list[str]] | None = None
        self._unpacked: set[tuple[str, ...]] = set()

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- looking things up (the _Tree of resolve_sources)

    def readlink(self, parts: tuple[str, ...]) -> str | None:
        """For ``resolve_in_root``: a symlink's target, None for anything else.

        Raises:
            FileNotFoundError: nothing there; NotADirectoryError: a parent is not a directory.
        """
        for i in range(1, len(parts)):
            parent = self.entries.get(parts[:i])
            if parent is None:
                raise FileNotFoundError(parts)
            if parent.kind != DIR:
                raise NotADirectoryError(parts)
        entry = self.entries.get(tuple(parts))
        if entry is None:
            raise FileNotFoundError(parts)
        return entry.linkname if entry.kind == SYMLINK else None

    def resolve(self, path: str, *, follow_final: bool = False) -> list[str]:
        return resolve_in_root(path, self.readlink, follow_final=follow_final)

    def entry(self, parts: list[str] | tuple[str, ...]) -> ContextEntry:
        """The entry at ``parts`` (already resolved; ``[]`` is the root).

        Raises:
            PathNotFound: no such entry.
        """
        if not parts:
            return _IMPLICIT_DIR
        entry = self.entries.get(tuple(parts))
        if entry is None:
            raise PathNotFound(f"no such file or directory: /{'/'.join(parts)}")
        return entry

    def is_dir(self, parts: list[str]) -> bool:
        return self.entry(parts).kind == DIR

    def listdir(self, parts: list[str]) -> list[str]:
        if not self.is_dir(parts):
            raise NotADirectoryError("/" + "/".join(parts))
        if self._children is None:
            children: dict[tuple[str, ...], list[str]] = {}
            for key in self.entries:
                children.setdefault(key[:-1], []).append(key[-1])
            self._children = children
        return list(self._children.get(tuple(parts), ()))

    def resolve_sources(self, sources: list[str]) -> list[list[str]]:
        """``resolve_sources`` in the index: the entries ``sources`` name, symlinks resolved inside it.

        Raises:
            BuildContextError: a source that matches nothing, or leaves the context through a symlink.
        """
        return _resolve_sources(self, sources)

    def _at_and_below(self, parts: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], ContextEntry]]:
        """The entries at ``parts`` and below it, parents before children (the root: everything)."""
        if self._keys is None:
            self._keys = sorted(self.entries)
        keys, n = self._keys, len(parts)
        # Tuples sort a directory right before everything below it.
        for i in range(bisect.bisect_left(keys, parts), len(keys)):
            key = keys[i]
            if key[:n] != parts:
                break
            yield key, self.entries[key]

    # -- the cache key (rule 4)

    def digest(self, sources: list[list[str]]) -> str:
        """``sha256:<hex>`` over resolved ``sources``: each one's path, then its records (rule 4).

        Raises:
            PathNotFound: a source that is not in the index (not resolved by ``resolve_sources``).
        """
        hasher = hashlib.sha256()
        for parts in sources:
            key = tuple(parts)
            hasher.update(json.dumps("/" + "/".join(parts)).encode("ascii") + b"\n")
            top = self.entry(key)
            if top.kind != DIR:
                hasher.update(top.record(""))
                continue
            n = len(key)
            for sub, entry in self._at_and_below(key):
                if len(sub) > n:
                    hasher.update(entry.record("/".join(sub[n:])))
        return "sha256:" + hasher.hexdigest()

    # -- files on disk (rule 5)

    def materialize(self, sources: list[list[str]], dest: Path) -> Path:
        """Unpack resolved ``sources``, everything below them and their parents into ``dest``; ``dest``.

        ``dest`` is made by the first call; a later call adds what is still
        missing there, so a build's COPY steps share one tree.

        Raises:
            BuildContextError: a directory's file changed since it was indexed, or the unpack failed.
        """
        wanted: dict[tuple[str, ...], ContextEntry] = {}
        for parts in sources:
            key = tuple(parts)
            for i in range(1, len(key)):
                wanted[key[:i]] = self.entry(key[:i])
            for sub, entry in self._at_and_below(key):
                wanted[sub] = entry
        todo = sorted(k for k in wanted if k not in self._unpacked)
        dest = Path(dest)
        if not dest.exists():
            dest.mkdir(mode=0o755)
        stream = ChunkReader(self._members(todo))
        try:
            with Root(dest) as root:
                extract_into(root, [], stream, same_owner=True, no_overwrite_dir_non_dir=False)
        except (ArchiveError, OSError) as exc:
            raise BuildContextError(f"cannot unpack the build context: {exc}") from exc
        finally:
            stream.close()
        self._unpacked.update(todo)
        return dest

    def _members(self, keys: list[tuple[str, ...]]) -> Iterator[bytes]:
        for key in keys:
            entry = self.entries[key]
            yield _tar_header(key, entry)
            if entry.kind == FILE:
                yield from self._source.data(key, entry)
                if entry.size % _BLOCK:
                    yield b"\0" * (_BLOCK - entry.size % _BLOCK)
        yield b"\0" * (2 * _BLOCK)


def _add_entry(entries: dict[tuple[str, ...], ContextEntry], key: tuple[str, ...], entry: ContextEntry,
               name: str) -> None:
    """Rule 2: ``entry`` at ``key``, its missing parents implicit, refused below a non-directory."""
    for i in range(1, len(key)):
        parent = entries.get(key[:i])
        if parent is None:
            entries[key[:i]] = _IMPLICIT_DIR
        elif parent.kind == SYMLINK:
            raise BuildContextError(f"tar entry {name!r} goes through the symlink {'/'.join(key[:i])!r}")
        elif parent.kind != DIR:
            raise BuildContextError(f"tar entry {name!r}: parent {'/'.join(key[:i])!r} is not a directory")
    old = entries.get(key)
    if old is not None and old.kind == DIR and entry.kind != DIR:
        # A non-directory replaces a directory and all below it (rare: a scan is fine).
        for other in [k for k in entries if len(k) > len(key) and k[:len(key)] == key]:
            del entries[other]
    entries[key] = entry


def _hash_range(fd: int, offset: int, size: int, *, what: str) -> str:
    """sha256 of ``size`` bytes of ``fd`` from ``offset``.

    Raises:
        BuildContextError: the file ends first (``what`` names it in the message).
    """
    hasher = hashlib.sha256()
    buf = bytearray(min(_CHUNK, max(size, 1)))
    view = memoryview(buf)
    left = size
    while left > 0:
        n = os.preadv(fd, [view[:min(left, len(buf))]], offset)
        if n <= 0:
            raise BuildContextError(f"{what} ended before its {size} bytes")
        hasher.update(view[:n])
        offset += n
        left -= n
    return "sha256:" + hasher.hexdigest()


class _TarSpool:
    """A ``ContextIndex``'s bytes in the tar upload's spool file (ours, unlinked: it cannot change)."""

    def __init__(self, spool: BinaryIO) -> None:
        self._spool = spool
        self._fd = spool.fileno()

    def data(self, key: tuple[str, ...], entry: ContextEntry) -> Iterator[bytes]:
        offset, left = entry.offset, entry.size
        while left > 0:
            chunk = os.pread(self._fd, min(_CHUNK, left), offset)
            if not chunk:
                raise BuildContextError(f"the build context tar ends inside {'/'.join(key)}")
            offset += len(chunk)
            left -= len(chunk)
            yield chunk

    def close(self) -> None:
        self._spool.close()


def index_tar(source: BinaryIO, *, spool_dir: Path | None = None) -> ContextIndex:
    """The context tar (plain or compressed; a seekable binary file, rewound) as an index (rules 1, 2).

    The index keeps ``source`` (or, for a compressed tar or a file without a
    descriptor, a plain copy in ``spool_dir``, and closes ``source``): close the index.

    Raises:
        BuildContextError: a malformed or truncated tar, an entry that would leave the context or go
            through a symlink, a hard link to nothing earlier, a sparse file. ``source`` is closed.
    """
    spool = source
    try:
        head = source.read(6)
        source.seek(0)
        compressed = detect_compression(head) != ""
        if compressed or not _has_fileno(source):
            spool = tempfile.TemporaryFile(dir=spool_dir)   # noqa: SIM115 - the index owns it
            with open_decompressed(source) as stream:
                shutil.copyfileobj(stream, spool, _CHUNK)
            source.close()
            spool.seek(0)
        fd = spool.fileno()
        end = os.fstat(fd).st_size
        entries: dict[tuple[str, ...], ContextEntry] = {}
        with tarfile.open(fileobj=spool, mode="r:", encoding="utf-8", errors="surrogateescape") as tar:
            for member in tar:
                _index_member(entries, member, fd, end)
    except BaseException as exc:
        spool.close()
        source.close()
        if isinstance(exc, BuildContextError):
            raise
        if isinstance(exc, (tarfile.TarError, EOFError, LayerError, OSError, ValueError, lzma.LZMAError,
                            zlib.error)):
            message = str(exc).replace("layer entry", "tar entry")
            raise BuildContextError(f"cannot read the build context: {message}") from exc
        raise
    return ContextIndex(entries, _TarSpool(spool))


def _has_fileno(f: BinaryIO) -> bool:
    try:
        f.fileno()
    except (AttributeError, OSError, ValueError):     # io.UnsupportedOperation is both of the last two
        return False
    return True


def _index_member(entries: dict[tuple[str, ...], ContextEntry], member: tarfile.TarInfo, fd: int,
                  end: int) -> None:
    parts = clean_entry_name(member.name)
    if not parts:
        return                                      # the root's own entry (rule 2)
    key = tuple(parts)
    name = member.name
    xattrs = tuple(sorted((k[len(_PAX_XATTR):], v) for k, v in member.pax_headers.items()
                          if k.startswith(_PAX_XATTR) and not k[len(_PAX_XATTR):].startswith("trusted.overlay.")))
    mtime_ns = int(float(member.pax_headers.get("mtime", member.mtime)) * 1_000_000_000)
    common = {"mode": member.mode & 0o7777, "uid": member.uid, "gid": member.gid, "xattrs": xattrs,
              "mtime_ns": mtime_ns}
    if member.issparse():
        raise BuildContextError(f"tar entry {name!r} is a sparse file, which a build context may not hold")
    if member.isreg():
        if member.offset_data + member.size > end:
            raise BuildContextError(f"the build context tar ends inside {name!r}")
        entry = ContextEntry(FILE, size=member.size, digest=_hash_range(fd, member.offset_data, member.size,
                                                                       what=f"tar entry {name!r}"),
                             offset=member.offset_data, **common)
    elif member.isdir():
        entry = ContextEntry(DIR, **common)
    elif member.issym():
        entry = ContextEntry(SYMLINK, linkname=member.linkname, **common)
    elif member.islnk():
        target_key = tuple(clean_entry_name(member.linkname))
        target = entries.get(target_key)
        if target is None or target.kind == DIR or target_key == key:
            raise BuildContextError(f"tar entry {name!r} is a hard link to {member.linkname!r}, which is not "
                                    "an earlier file of the context")
        entry = target                              # a copy: its data and metadata (rule 2)
    elif member.ischr() or member.isblk() or member.isfifo():
        kind = CHAR if member.ischr() else BLOCK if member.isblk() else FIFO
        entry = ContextEntry(kind, device=(member.devmajor, member.devminor) if kind != FIFO else (0, 0), **common)
    else:
        raise BuildContextError(f"tar entry {name!r} has a type a build context may not hold ({member.type!r})")
    _add_entry(entries, key, entry, name)


# ---------------------------------------------------------------- a context directory


class _IgnoreRules(Protocol):
    """A ``.dockerignore`` (``protocols.dockerfile.DockerIgnore``)."""

    has_exclusions: bool

    def excluded(self, path: str) -> bool: ...


def walk_context(root_fd: int, ignore: _IgnoreRules, *, keep: frozenset[str] = frozenset()
                 ) -> Iterator[tuple[tuple[str, ...], os.stat_result, int]]:
    """A context directory's entries as the docker CLI sends them (rule 3): ``(parts, lstat, parent fd)``.

    Parents come before their children; the parent descriptor is valid until
    the next item. An excluded directory is not yielded (an implicit parent if
    something below it comes back through a ``!`` pattern).

    Raises:
        BuildContextError: a directory that cannot be read.
    """
    yield from _walk_directory(root_fd, (), ignore, keep)


def _walk_directory(fd: int, prefix: tuple[str, ...], ignore: _IgnoreRules, keep: frozenset[str]
                    ) -> Iterator[tuple[tuple[str, ...], os.stat_result, int]]:
    for name in sorted(os.listdir(fd)):
        parts = (*prefix, name)
        rel = "/".join(parts)
        try:
            st = os.lstat(name, dir_fd=fd)
        except FileNotFoundError:
            continue                                # removed while we walk
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFDIR:
            excluded = ignore.excluded(rel)
            if excluded and not ignore.has_exclusions:
                continue                            # nothing below can come back: not even walked
            if not excluded:
                yield parts, st, fd
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise BuildContextError(f"cannot read the context directory {rel}: {exc.strerror}") from exc
            try:
                yield from _walk_directory(child, parts, ignore, keep)
            finally:
                os.close(child)
        elif kind == stat.S_IFSOCK:
            continue
        elif not ignore.excluded(rel) or rel in keep:
            yield parts, st, fd


def _open_file(parent: int, parts: tuple[str, ...]) -> tuple[int, os.stat_result]:
    """A regular file of a walk, opened without following a symlink or blocking on a FIFO."""
    try:
        fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=parent)
    except OSError as exc:
        raise BuildContextError(f"cannot read the context file {'/'.join(parts)}: {exc.strerror}") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise BuildContextError(f"the context file {'/'.join(parts)} was replaced while it was read")
    return fd, st


def _hash_file(fd: int, parts: tuple[str, ...], size: int) -> str:
    digest = _hash_range(fd, 0, size, what=f"the context file {'/'.join(parts)}")
    if os.pread(fd, 1, size):
        raise BuildContextError(f"the context file {'/'.join(parts)} grew while it was read")
    return digest


def _tar_header(key: tuple[str, ...] | list[str], entry: ContextEntry) -> bytes:
    """The tar header of one context entry: numeric owners, whole-second time, its xattrs as PAX."""
    info = tarfile.TarInfo("/".join(key))
    info.type = _TAR_TYPE[entry.kind]
    info.mode, info.uid, info.gid = entry.mode, entry.uid, entry.gid
    info.uname = info.gname = ""
    info.mtime = entry.mtime_ns // 1_000_000_000
    info.linkname = entry.linkname
    info.size = entry.size if entry.kind == FILE else 0
    info.devmajor, info.devminor = entry.device
    info.pax_headers = {_PAX_XATTR + k: v for k, v in entry.xattrs}
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _entry_of(st: os.stat_result, **extra) -> ContextEntry:
    kind = _KIND_OF_MODE[stat.S_IFMT(st.st_mode)]
    device = (os.major(st.st_rdev), os.minor(st.st_rdev)) if kind in (CHAR, BLOCK) else (0, 0)
    return ContextEntry(kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, device=device,
                        mtime_ns=st.st_mtime_ns, **extra)


class _Directory:
    """A ``ContextIndex``'s bytes in the client's directory, checked against the index as they are read."""

    def __init__(self, fd: int, path: str) -> None:
        self._fd = fd
        self._path = path

    def data(self, key: tuple[str, ...], entry: ContextEntry) -> Iterator[bytes]:
        def changed() -> BuildContextError:
            return BuildContextError(f"the context file {self._path.rstrip('/')}/{'/'.join(key)} changed during "
                                     "the build; build again")

        try:
            with Root(f"/proc/self/fd/{self._fd}") as root:
                parent = root.open_dir(key[:-1])
        except (ArchiveError, OSError):
            raise changed() from None
        try:
            fd, st = _open_file(parent, key)
        except BuildContextError:
            raise changed() from None
        finally:
            os.close(parent)
        try:
            if st.st_size != entry.size:
                raise changed()
            hasher = hashlib.sha256()
            left = entry.size
            while left > 0:
                chunk = os.read(fd, min(_CHUNK, left))
                if not chunk:
                    raise changed()
                hasher.update(chunk)
                left -= len(chunk)
                if left == 0 and "sha256:" + hasher.hexdigest() != entry.digest:
                    raise changed()                 # before the last bytes go out
                yield chunk
            if entry.size == 0 and "sha256:" + hasher.hexdigest() != entry.digest:
                raise changed()
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_context_file(fd: int, name: str) -> str:
    """A top-level file of a context directory (``.dockerignore``), resolved inside it; "" when missing."""
    return read_file(Path(f"/proc/self/fd/{fd}"), name)


def index_directory(path: str | Path, *, parse_ignore: Callable[[str], _IgnoreRules],
                    identity: tuple[int, int] | None = None, keep: frozenset[str] = frozenset(),
                    hashes: FileHashes | None = None) -> ContextIndex:
    """A context directory of this host as an index (rules 1-3, 6), its ``.dockerignore`` applied.

    Args:
        path: absolute; a symlink to the directory is followed (the client named it).
        parse_ignore: ``.dockerignore`` text -> its rules (``protocols.dockerfile.parse_dockerignore``).
        identity: the (st_dev, st_ino) the client saw at ``path``; another directory there is refused.
        keep: paths sent whatever ``.dockerignore`` says (the Dockerfile, relative to the context).
        hashes: remembered digests (``BuildCache.file_hashes``), updated and saved; None: hash every file.

    Raises:
        ContextNotVisible: ``path`` is missing or not the client's directory.
        BuildContextError: a directory or file that cannot be read, or that changes while it is read.
        Whatever ``parse_ignore`` raises for a bad ``.dockerignore``.
    """
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise ContextNotVisible(f"the build context directory {path} is not on the daemon's host: "
                                f"{exc.strerror.lower()}") from None
    try:
        st = os.fstat(fd)
        if identity is not None and (st.st_dev, st.st_ino) != tuple(identity):
            raise ContextNotVisible(f"the build context directory {path} on the daemon's host is not the "
                                    "client's (another mount namespace?)")
        ignore = parse_ignore(read_context_file(fd, ".dockerignore"))
        entries: dict[tuple[str, ...], ContextEntry] = {}
        for parts, st, parent in walk_context(fd, ignore, keep=keep):
            kind = stat.S_IFMT(st.st_mode)
            if kind == stat.S_IFREG:
                rel = "/".join(parts)
                digest = hashes.get(rel, st) if hashes is not None else None
                if digest is None:
                    file_fd, st = _open_file(parent, parts)
                    try:
                        digest = _hash_file(file_fd, parts, st.st_size)
                    finally:
                        os.close(file_fd)
                    if hashes is not None:
                        hashes.put(rel, st, digest)
                entry = _entry_of(st, size=st.st_size, digest=digest)
            elif kind == stat.S_IFLNK:
                entry = _entry_of(st, linkname=os.readlink(parts[-1], dir_fd=parent))
            else:
                entry = _entry_of(st)
            _add_entry(entries, parts, entry, "/".join(parts))
        if hashes is not None:
            hashes.save()
    except BaseException:
        os.close(fd)
        raise
    return ContextIndex(entries, _Directory(fd, path))


def write_context_tar(path: str | Path, ignore: _IgnoreRules, out: BinaryIO, *,
                      keep: frozenset[str] = frozenset()) -> None:
    """The context directory as the tar a client uploads (rule 3: the walk ``index_directory`` makes).

    Names relative to the context, numeric owners, whole-second times, no
    xattrs; each file whole (hard links too), with what ``fstat`` said of it.

    Raises:
        BuildContextError: a directory or file that cannot be read, or that changes while it is read.
    """
    fd = os.open(os.fspath(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for parts, st, parent in walk_context(fd, ignore, keep=keep):
            file_fd = -1
            if stat.S_ISREG(st.st_mode):
                file_fd, st = _open_file(parent, parts)
            try:
                entry = _entry_of(st, size=st.st_size if file_fd >= 0 else 0,
                                  linkname=os.readlink(parts[-1], dir_fd=parent) if stat.S_ISLNK(st.st_mode) else "")
                out.write(_tar_header(parts, entry))
                if file_fd >= 0:
                    left = entry.size
                    while left > 0:
                        chunk = os.read(file_fd, min(_CHUNK, left))
                        if not chunk:
                            raise BuildContextError(f"the context file {'/'.join(parts)} shrank while it was read")
                        out.write(chunk)
                        left -= len(chunk)
                    if entry.size % _BLOCK:
                        out.write(b"\0" * (_BLOCK - entry.size % _BLOCK))
            finally:
                if file_fd >= 0:
                    os.close(file_fd)
        out.write(b"\0" * (2 * _BLOCK))
    finally:
        os.close(fd)


# ---------------------------------------------------------------- image views


@contextlib.contextmanager
def open_image_view(layers: list[Path], mountpoint: Path, *, sc=_syscalls) -> Iterator[Path]:
    """A read-only tree of an image's snapshots (``layers`` bottom first); the path to read.

    No layer: an empty directory. One: the snapshot itself (read, never written).
    More: an overlay of them with no upper dir, which overlayfs mounts read-only.

    Raises:
        BuildContextError: the mount failed.
    """
    mountpoint = Path(mountpoint)
    if len(layers) == 1:
        yield Path(layers[0])
        return
    mountpoint.mkdir(mode=0o700)
    try:
        if not layers:
            yield mountpoint
            return
        # TODO: past ~40 layers the options outgrow a page; overlay.mount_container_root's
        # /proc/self/fd trick would fix it here too.
        data = "lowerdir=" + ":".join(escape_path(os.fspath(p)) for p in reversed(layers))
        try:
            sc.mount("overlay", os.fspath(mountpoint), "overlay", _syscalls.MS_RDONLY, data)
        except OSError as exc:
            raise BuildContextError(f"failed to mount a view of the image on {mountpoint}: "
                                    f"{exc.strerror or exc}") from exc
        try:
            yield mountpoint
        finally:
            sc.umount2(os.fspath(mountpoint), _syscalls.MNT_DETACH)
    finally:
        with contextlib.suppress(OSError):
            mountpoint.rmdir()


def read_file(view: Path, path: str) -> str:
    """A text file of a view (``/etc/passwd``), resolved inside it; "" when missing or unreadable."""
    try:
        with Root(view) as root:
            parts = root.resolve(path, follow_final=True)
            if not parts:
                return ""
            parent = root.open_dir(parts[:-1])
            try:
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            finally:
                os.close(parent)
            with open(fd, "rb") as f:
                return f.read(4 << 20).decode("utf-8", "replace")
    except (ArchiveError, OSError):
        return ""


def is_directory(view: Path, path: str) -> bool:
    """Whether ``path`` (symlinks resolved inside the view) is a directory of the view."""
    try:
        with Root(view) as root:
            return stat.S_ISDIR(root.lstat(root.resolve(path, follow_final=True)).st_mode)
    except (ArchiveError, OSError):
        return False


def _resolve_dest(view: Path, path: str) -> list[str]:
    """``path`` through the image's symlinks where they exist; as written below the first missing part."""
    try:
        with Root(view) as root:
            return root.resolve(path, follow_final=True)
    except PathNotFound:
        return clean_path(path)
    except ArchiveError as exc:
        raise BuildContextError(f"destination {path}: {exc}") from exc


def make_parents(layer: Path, view: Path, parts: list[str], *, owner: tuple[int, int] | None = None) -> None:
    """Create ``parts`` as directories in ``layer``: the image's mode and owner where the image
    has them, else 0755 and ``owner`` (root by default)."""
    current_layer, current_view = layer, view
    for part in parts:
        current_layer = current_layer / part
        current_view = current_view / part
        try:
            st = os.lstat(current_layer)
            if not stat.S_ISDIR(st.st_mode):
                raise BuildContextError(f"cannot make directory {current_layer.relative_to(layer)}: "
                                        "a file is in the way")
            continue
        except FileNotFoundError:
            pass
        try:
            vst = os.lstat(current_view)
        except OSError:
            vst = None
        os.mkdir(current_layer, 0o755)
        if vst is not None and stat.S_ISDIR(vst.st_mode):
            os.chown(current_layer, vst.st_uid, vst.st_gid)
            os.chmod(current_layer, stat.S_IMODE(vst.st_mode))
            os.utime(current_layer, ns=(vst.st_atime_ns, vst.st_mtime_ns))
        else:
            os.chmod(current_layer, 0o755)
            if owner is not None:
                os.chown(current_layer, *owner)


def ensure_directory(layer: Path, view: Path, path: str, *, owner: tuple[int, int] | None = None) -> bool:
    """WORKDIR: make ``path`` in ``layer`` unless the image has it; True when something was made."""
    if is_directory(view, path):
        return False
    make_parents(layer, view, _resolve_dest(view, path), owner=owner)
    return True


# ---------------------------------------------------------------- COPY / ADD


def resolve_sources(root_path: Path, sources: list[str]) -> list[list[str]]:
    """The entries ``sources`` name in ``root_path`` (a stage's view, or a context on disk), in order.

    A source is relative to the root (a leading ``/`` and ``..`` stay inside it);
    globs (``*``, ``?``, ``[...]``) match names one component at a time.
    ``ContextIndex.resolve_sources`` is the same in an index.

    Raises:
        BuildContextError: a source that matches nothing, or leaves the root through a symlink.
    """
    with Root(root_path) as root:
        return _resolve_sources(_RootTree(root), sources)


class _RootTree:
    """A directory on disk as the ``_Tree`` of ``_resolve_sources``."""

    def __init__(self, root: Root) -> None:
        self._root = root

    def resolve(self, path: str, *, follow_final: bool = False) -> list[str]:
        return self._root.resolve(path, follow_final=follow_final)

    def is_dir(self, parts: list[str]) -> bool:
        return stat.S_ISDIR(self._root.lstat(parts).st_mode)

    def listdir(self, parts: list[str]) -> list[str]:
        fd = self._root.open_dir(parts)
        try:
            return os.listdir(fd)
        finally:
            os.close(fd)


def _resolve_sources(tree: _Tree, sources: list[str]) -> list[list[str]]:
    out: list[list[str]] = []
    for source in sources:
        parts = clean_path(source)
        try:
            if not any(c in _GLOB_CHARS for c in source):
                resolved = tree.resolve("/".join(parts), follow_final=True)
                tree.is_dir(resolved)               # it exists
                out.append(resolved)
                continue
            matches = _glob(tree, parts)
        except PathNotFound:
            raise BuildContextError(f"file not found in build context or excluded by .dockerignore: "
                                    f"stat {source}: file does not exist") from None
        except ArchiveError as exc:
            raise BuildContextError(f"source {source}: {exc}") from None
        if not matches:
            raise BuildContextError(f"no source files were specified: {source} matches nothing")
        out.extend(matches)
    return out


def _glob(tree: _Tree, pattern: list[str]) -> list[list[str]]:
    found: list[list[str]] = [[]]
    for i, part in enumerate(pattern):
        final = i == len(pattern) - 1
        nxt: list[list[str]] = []
        for base in found:
            if not any(c in _GLOB_CHARS for c in part):
                candidates = [part]
            else:
                try:
                    names = tree.listdir(base)
                except (OSError, ArchiveError):
                    continue                    # not a directory (or a symlink): no match below it
                candidates = sorted(n for n in names if fnmatch.fnmatchcase(n, part))
            for name in candidates:
                try:
                    resolved = tree.resolve("/".join([*base, name]), follow_final=True)
                    is_dir = tree.is_dir(resolved)
                except PathNotFound:
                    continue
                if not final and not is_dir:
                    continue
                nxt.append(resolved)
        found = nxt
    return found


def _is_archive(root: Root, parts: list[str]) -> bool:
    parent = root.open_dir(parts[:-1])
    try:
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    finally:
        os.close(parent)
    with open(fd, "rb") as f:
        head = f.read(512)
    return detect_compression(head) != "" or head[257:262] == b"ustar"


def copy_sources(src_root: Path, entries: list[list[str]], dest: str, layer: Path, view: Path, *,
                 owner: tuple[int, int] | None = None, mode: int | None = None,
                 extract_archives: bool = False, several: bool = False) -> None:
    """COPY/ADD ``entries`` of ``src_root`` to ``dest`` (absolute, in the image) into ``layer`` (rules 1, 2).

    Args:
        view: the image being built on, read-only (destinations and parents resolved in it).
        owner: ``--chown`` as numbers; None: 0:0 (archives unpacked by ADD keep theirs).
        mode: ``--chmod``; None keeps the sources' modes.
        several: the instruction named several sources or a glob (rule 1).

    Raises:
        BuildContextError: a destination that is not a directory where one is needed, or a failed copy.
    """
    wants_dir = dest.endswith(("/", "/.")) or dest in ("/", ".")
    if (several or len(entries) > 1) and not wants_dir:
        raise BuildContextError(f"when using COPY with more than one source file, the destination "
                                f"must be a directory and end with a /: {dest}")
    dest_parts = _resolve_dest(view, dest)
    dest_is_dir = wants_dir or is_directory(view, "/" + "/".join(dest_parts))
    made: list[Path] = []
    try:
        with Root(src_root) as root:
            for parts in entries:
                st = root.lstat(parts)
                if stat.S_ISDIR(st.st_mode):
                    target_dir, arcname = dest_parts, ""
                elif extract_archives and stat.S_ISREG(st.st_mode) and _is_archive(root, parts):
                    make_parents(layer, view, dest_parts, owner=owner)
                    made.extend(_extract_archive(root, parts, layer, dest_parts))
                    continue
                elif dest_is_dir:
                    target_dir, arcname = dest_parts, parts[-1]
                else:
                    target_dir, arcname = dest_parts[:-1], dest_parts[-1]
                make_parents(layer, view, target_dir, owner=owner)
                if not arcname and not is_directory(view, "/" + "/".join(target_dir)) and owner is not None:
                    made.append(layer.joinpath(*target_dir))
                stream = TarStream(root, parts, arcname)
                names: list[str] = []

                def record(name: str, names=names) -> str:
                    names.append(name)
                    return name

                try:
                    with Root(layer) as out:
                        extract_into(out, target_dir, stream, same_owner=False, no_overwrite_dir_non_dir=False,
                                     rename=record)
                finally:
                    stream.close()
                made.extend(layer.joinpath(*target_dir, *clean_path(n)) for n in names if clean_path(n))
        for path in made:
            if owner is not None:
                os.lchown(path, *owner)
            if mode is not None and not path.is_symlink():
                os.chmod(path, mode)
    except ArchiveError as exc:
        raise BuildContextError(str(exc)) from exc
    except OSError as exc:
        raise BuildContextError(f"copy to {dest} failed: {exc}") from exc


def _extract_archive(root: Root, parts: list[str], layer: Path, dest_parts: list[str]) -> list[Path]:
    parent = root.open_dir(parts[:-1])
    try:
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    finally:
        os.close(parent)
    names: list[str] = []

    def record(name: str) -> str:
        names.append(name)
        return name

    with open(fd, "rb") as f, Root(layer) as out:
        extract_into(out, dest_parts, f, same_owner=True, no_overwrite_dir_non_dir=False, rename=record)
    return [layer.joinpath(*dest_parts, *clean_path(n)) for n in names if clean_path(n)]


def remove_tree(path: Path) -> None:
    """A scratch directory of a build, gone (missing is fine)."""
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- the caches


BUILD_CACHE_FILE = "build-cache.json"     # under the data root
FILE_HASHES_DIR = "build-hashes"          # next to it: one FileHashes file per context directory
FILE_HASHES_KEPT = 64                     # context directories remembered
RACY_NS = 2_000_000_000                   # rule 6: a file changed this recently is hashed again next time


class FileHashes:
    """Digests of one context directory's files from earlier builds (rule 6), one JSON file.

    ``get`` answers only while the file's (st_dev, st_ino, size, mtime_ns,
    ctime_ns) are what they were when it was hashed; ctime catches a content
    change whose mtime was put back (``cp -p``, ``touch -d``). ``save`` keeps
    the files this build looked at and drops the rest. It is a cache: a file
    that cannot be read is an empty one, and a lost write costs a re-hash.

    Args:
        path: the JSON file.
        now_ns: when hashing started (``time.time_ns()``); tests pass their own.
    """

    def __init__(self, path: Path, *, now_ns: int | None = None) -> None:
        self.path = Path(path)
        self.now_ns = time.time_ns() if now_ns is None else now_ns
        self._old = self._load()
        self._new: dict[str, list] = {}
        self._changed = False

    def _load(self) -> dict[str, list]:
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        files = doc.get("files") if isinstance(doc, dict) else None
        if not isinstance(files, dict):
            return {}
        return {k: v for k, v in files.items()
                if isinstance(v, list) and len(v) == 6 and all(isinstance(n, int) for n in v[:5])
                and isinstance(v[5], str)}

    @staticmethod
    def _stamp(st: os.stat_result) -> list[int]:
        return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]

    def get(self, rel: str, st: os.stat_result) -> str | None:
        """The digest of ``rel`` if ``st`` (its lstat now) is what it was when hashed, else None."""
        record = self._old.get(rel)
        if record is None or record[:5] != self._stamp(st):
            return None
        self._new[rel] = record
        return record[5]

    def put(self, rel: str, st: os.stat_result, digest: str) -> None:
        """Remember ``digest`` of ``rel`` (``st``: its fstat when hashed), unless it changed too recently."""
        self._changed = True
        if max(st.st_mtime_ns, st.st_ctime_ns) > self.now_ns - RACY_NS:
            return                              # racy: a write in the same tick would not show (rule 6)
        self._new[rel] = [*self._stamp(st), digest]

    def save(self) -> None:
        """Write what this build saw (tmp + rename, no fsync: a cache), if it differs from what was read."""
        if not self._changed and self._new.keys() == self._old.keys():
            return
        fresh = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".tmp-{self.path.name}-{os.getpid()}-{threading.get_ident()}")
        try:
            with open(tmp, "w") as f:
                json.dump({"files": self._new}, f, separators=(",", ":"))
            os.rename(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return
        self._old, self._changed = dict(self._new), False
        if fresh:
            _prune_oldest(self.path.parent, FILE_HASHES_KEPT)


def _prune_oldest(directory: Path, kept: int) -> None:
    """Delete all but the ``kept`` most recently written ``*.json`` files of ``directory``."""
    try:
        found = [(p.stat().st_mtime_ns, p) for p in directory.glob("*.json")]
    except OSError:
        return
    for _, p in sorted(found, reverse=True)[kept:]:
        with contextlib.suppress(OSError):
            p.unlink()


class BuildCache:
    """The build cache index: cache key -> image id, one JSON file under the data root.

    Written whole (tmp + fsync + rename) under a flock, as the image index is. An
    entry is only a hint: ``build`` checks that its image still exists, and drops
    the entry when it does not (an ``rmi`` of an intermediate image needs nothing else).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    def file_hashes(self, directory: str) -> FileHashes:
        """The ``FileHashes`` of the context directory ``directory`` (an absolute path), beside the index."""
        name = hashlib.sha256(os.fsencode(directory)).hexdigest()[:32]
        return FileHashes(self.path.parent / FILE_HASHES_DIR / f"{name}.json")

    def load(self) -> dict[str, str]:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}                      # a cache that cannot be read is an empty cache
        entries = doc.get("entries") if isinstance(doc, dict) else None
        return {k: v for k, v in (entries or {}).items() if isinstance(k, str) and isinstance(v, str)}

    def get(self, key: str) -> str | None:
        return self.load().get(key)

    def put(self, key: str, image_id: str) -> None:
        self._update(lambda entries: entries.__setitem__(key, image_id))

    def drop(self, key: str) -> None:
        self._update(lambda entries: entries.pop(key, None))

    def _update(self, change) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = self.load()
            change(entries)
            tmp = self.path.with_name(f".tmp-{self.path.name}-{os.getpid()}-{threading.get_ident()}")
            with open(tmp, "w") as f:
                json.dump({"entries": entries}, f, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, self.path)
        finally:
            os.close(lock)


def cache_key(parent: str | None, text: str, content: str = "") -> str:
    """The cache key of a step: its parent image, its instruction after substitution, its sources' hash."""
    doc = json.dumps([parent or "scratch", text, content], separators=(",", ":"))
    return hashlib.sha256(doc.encode("utf-8", "surrogateescape")).hexdigest()


__all__ = [
    "BLOCK", "CHAR", "DIR", "FIFO", "FILE", "SYMLINK", "BuildCache", "BuildContextError", "ContextEntry",
    "ContextIndex", "ContextNotVisible", "FileHashes", "cache_key", "copy_sources", "ensure_directory",
    "index_directory", "index_tar", "is_directory", "make_parents", "open_image_view", "read_context_file",
    "read_file", "remove_tree", "resolve_sources", "walk_context", "write_context_tar",
]
