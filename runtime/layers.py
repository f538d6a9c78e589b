"""Layer tars <-> snapshot directories: safe unpacking, and packing a directory back.

``unpack_layer`` turns one layer (a tar, maybe compressed) into one snapshot
directory in the form overlayfs reads as a lower layer: OCI whiteouts become
overlay whiteouts. ``pack_directory`` does the reverse, for ``import DIR`` and,
with ``whiteouts=True``, for turning a container's upper dir into a layer.

Rules of unpacking (a layer is untrusted input):

1. Nothing is ever written outside the destination. Entry names are cleaned
   (``./`` dropped); absolute names and any ``..`` component are refused, not
   rewritten. Every parent directory is opened one component at a time with
   ``O_NOFOLLOW`` from a descriptor of the destination, and every leaf is
   created with the ``*at`` calls on that parent's descriptor, so a symlink,
   whether it came in the layer or not, is never followed on the way. An entry
   whose parent is a symlink is refused (securejoin's guarantee, made stricter:
   SPEC: the image spec does not say what a layer writing through its own
   symlink means; Docker resolves it inside the root, we refuse it, as no
   layer built by a tool does that).
2. A hard link may only point at a non-directory entry that appeared earlier
   in the same layer and is still there: never at a file of the host, of a
   lower layer, or outside.
3. A snapshot is whole or absent: we unpack into ``.tmp-<name>-<random>`` next
   to the destination and rename it into place at the end, so an interrupted
   unpack leaves a temp directory (never counted, removed by the image store's
   gc), not a half snapshot.
4. ``trusted.overlay.*`` attributes in a layer are dropped: they would steer
   overlayfs (redirects, metacopy, opaque) from image content. Only
   ``.wh..wh..opq`` sets ``trusted.overlay.opaque``.
5. Metadata is applied in the order that keeps it: chown (which clears setuid
   bits and file capabilities), then chmod, then xattrs, then times;
   directory times last and deepest first, since creating children changes them.

The diff id is the sha256 of the uncompressed tar stream, every byte of it
(also the zero blocks after the end-of-archive marker).

Rejected: ``tarfile.extractall`` even with the 3.12 ``data`` filter: it checks
names, but writes through paths, so a symlink planted by an earlier entry can
still redirect a later write (the filter's own documentation warns of races),
and it knows nothing of whiteouts.
TODO: syncfs(2) the temp snapshot before the rename (needs a wrapper in
_syscalls.py); today a power cut soon after an unpack can leave files of a
renamed snapshot empty.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import hashlib
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import uuid
import zlib
from pathlib import Path
from typing import BinaryIO

from .errors import HostError

WHITEOUT_PREFIX = ".wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"
_OVERLAY_XATTR_PREFIX = "trusted.overlay."
_PAX_XATTR = "SCHILY.xattr."
_CHUNK = 1 << 20
_TMP_PREFIX = ".tmp-"

# First bytes of each compressed format (RFC 1952, bzip2, xz, RFC 8878).
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"))


class LayerError(HostError):
    """A layer could not be unpacked or packed."""


class UnsafeLayerEntry(LayerError):
    """A layer entry would write outside its snapshot; nothing was kept."""


class SnapshotExists(LayerError):
    """The destination snapshot is already there (maybe unpacked concurrently)."""


# ---------------------------------------------------------------- unpacking


def unpack_layer(source: Path | str | BinaryIO, dest: Path, *, expected_diff_id: str | None = None,
                 same_owner: bool | None = None) -> str:
    """Unpack a layer tar (plain, gzip, bzip2, xz, or zstd with ``zstandard``) into ``dest``.

    Args:
        source: the tar file, or a binary file object positioned at its start.
        dest: the snapshot directory to create; it must not exist, its parent must.
        expected_diff_id: refuse the layer unless its uncompressed stream has
            this digest (known from the image config before a pull unpacks).
        same_owner: apply the entries' uid/gid; defaults to "running as root".
            Without it, device nodes are refused, since only root can make them.

    Returns:
        The diff id, ``sha256:<hex>`` of the uncompressed tar.

    Raises:
        UnsafeLayerEntry: an entry would escape ``dest``; the message names it.
        SnapshotExists: ``dest`` exists (checked first, and again at the rename).
        LayerError: malformed or truncated tar, unsupported compression or entry
            type, diff id mismatch, or a filesystem error. In every case no
            ``dest`` is created and the temp directory is removed.
    """
    dest = Path(dest)
    if os.path.lexists(dest):
        raise SnapshotExists(f"cannot unpack layer into {dest}: it already exists")
    if same_owner is None:
        same_owner = os.geteuid() == 0
    tmp = dest.parent / f"{_TMP_PREFIX}{dest.name}-{uuid.uuid4().hex[:12]}"
    try:
        os.mkdir(tmp, 0o755)
    except OSError as exc:
        raise LayerError(f"failed to create {tmp}: {exc.strerror}") from exc
    try:
        with _open_source(source) as raw:
            diff_id = _unpack_stream(raw, tmp, same_owner=same_owner)
        if expected_diff_id is not None and diff_id != expected_diff_id:
            raise LayerError(f"layer has diff id {diff_id}, expected {expected_diff_id}")
        try:
            os.rename(tmp, dest)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise SnapshotExists(f"cannot unpack layer into {dest}: it appeared meanwhile") from exc
            raise LayerError(f"failed to rename {tmp} to {dest}: {exc.strerror}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return diff_id


def diff_id_of(source: Path | str | BinaryIO) -> str:
    """The diff id of a layer without unpacking it (one pass of decompression).

    Raises:
        LayerError: unsupported compression or a corrupt compressed stream.
    """
    with _open_source(source) as raw, open_decompressed(raw) as stream:
        hasher = hashlib.sha256()
        try:
            while chunk := stream.read(_CHUNK):
                hasher.update(chunk)
        except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:
            raise LayerError(f"corrupt or unreadable compressed layer: {exc}") from exc
        return "sha256:" + hasher.hexdigest()


class _open_source:
    """A path is opened (and closed); a file object is borrowed as is."""

    def __init__(self, source: Path | str | BinaryIO) -> None:
        self._source = source
        self._owned: BinaryIO | None = None

    def __enter__(self) -> BinaryIO:
        if isinstance(self._source, (str, os.PathLike)):
            try:
                self._owned = open(self._source, "rb")
            except OSError as exc:
                raise LayerError(f"cannot open layer {self._source}: {exc.strerror}") from exc
            return self._owned
        return self._source

    def __exit__(self, *exc: object) -> None:
        if self._owned is not None:
            self._owned.close()


class _Prefixed:
    """Bytes already read from a stream, then the rest of it (to sniff the magic)."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head, self._rest = head, rest

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size < 0:
                data, self._head = self._head + self._rest.read(), b""
                return data
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._rest.read(size)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        pass


class _Hashing:
    """A read-only stream that hashes what passes through it (the diff id)."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self.hasher = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.hasher.update(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def detect_compression(head: bytes) -> str:
    """``"gzip"``, ``"bzip2"``, ``"xz"``, ``"zstd"`` or ``""`` (none) from a stream's first 6 bytes."""
    return next((name for magic, name in _MAGIC if head.startswith(magic)), "")


class open_decompressed:
    """``with open_decompressed(raw) as stream``: the uncompressed stream of a layer.

    Raises:
        LayerError: zstd without the ``zstandard`` module.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._stream = None

    def __enter__(self):
        head = self._raw.read(6)
        source = _Prefixed(head, self._raw)
        kind = detect_compression(head)
        if kind == "gzip":
            self._stream = gzip.GzipFile(fileobj=source, mode="rb")
        elif kind == "bzip2":
            self._stream = bz2.BZ2File(source, "rb")
        elif kind == "xz":
            self._stream = lzma.LZMAFile(source, "rb")
        elif kind == "zstd":
            try:
                import zstandard  # not in the stdlib before 3.14; optional
            except ImportError:
                raise LayerError("layer is zstd-compressed, and the zstandard module is not installed") from None
            self._stream = zstandard.ZstdDecompressor().stream_reader(source, closefd=False)
        else:
            self._stream = source
        return self._stream

    def __exit__(self, *exc: object) -> None:
        if self._stream is not None and self._stream is not self._raw:
            self._stream.close()


def _unpack_stream(raw: BinaryIO, root: Path, *, same_owner: bool) -> str:
    with open_decompressed(raw) as stream:
        hashing = _Hashing(stream)
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            unpacker = _Unpacker(root_fd, same_owner=same_owner)
            try:
                # "r|": a forward-only stream; no seeking, no member table needed.
                with tarfile.open(fileobj=hashing, mode="r|", encoding="utf-8", errors="surrogateescape") as tar:
                    for member in tar:
                        unpacker.add(member, tar)
                hashing.drain()   # the diff id covers the padding after the end marker too
            except (tarfile.TarError, EOFError, gzip.BadGzipFile, lzma.LZMAError, zlib.error) as exc:
                raise LayerError(f"malformed or truncated layer: {exc}") from exc
            except OSError as exc:
                raise LayerError(f"failed to unpack layer into {root}: {exc}") from exc
            unpacker.finish()
        finally:
            os.close(root_fd)
        return "sha256:" + hashing.hasher.hexdigest()


def clean_entry_name(name: str) -> list[str]:
    """A tar entry name -> its path components inside the layer (``[]`` for the root).

    Raises:
        UnsafeLayerEntry: an absolute name, or a ``..`` component anywhere (rule 1).
    """
    if name.startswith("/"):
        raise UnsafeLayerEntry(f"layer entry {name!r} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeLayerEntry(f"layer entry {name!r} contains '..'")
    return parts


class _Unpacker:
    """Writes entries below one directory descriptor, never through a symlink."""

    oci_whiteouts = True      # ``.wh.*`` entries are whiteouts (``runtime.archive`` turns it off for cp)

    def __init__(self, root_fd: int, *, same_owner: bool) -> None:
        self.root_fd = root_fd
        self.same_owner = same_owner
        self.non_dirs: set[tuple[str, ...]] = set()      # hard link targets (rule 2)
        self.whiteouts: set[tuple[str, ...]] = set()
        self.dir_times: list[tuple[tuple[str, ...], int, int]] = []

    # -- walking

    def _open_dir(self, parts: list[str] | tuple[str, ...], *, create: bool, entry: str) -> int:
        """A descriptor of the directory ``parts`` below the root, created if asked.

        Each component is opened with O_NOFOLLOW relative to the previous one,
        so the walk can't leave the root through a symlink (rule 1).
        """
        fd = os.dup(self.root_fd)
        try:
            for i, part in enumerate(parts):
                try:
                    child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o755, dir_fd=fd)   # an implicit parent: Docker's mode
                    child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                    os.fchmod(child, 0o755)             # whatever the umask
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    where = "/".join(parts[:i + 1])
                    if stat.S_ISLNK(os.lstat(part, dir_fd=fd).st_mode):
                        raise UnsafeLayerEntry(f"layer entry {entry!r} goes through the symlink {where!r}") from None
                    raise LayerError(f"layer entry {entry!r}: parent {where!r} is not a directory") from None
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    # -- entries

    def add(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        parts = clean_entry_name(member.name)
        if not parts:
            if not member.isdir():
                raise UnsafeLayerEntry(f"layer entry {member.name!r} names the root but is not a directory")
            self._set_dir_metadata(self.root_fd, (), member)
            return
        base = parts[-1]
        if self.oci_whiteouts and base.startswith(WHITEOUT_PREFIX):
            self._whiteout(member, parts)
            return
        if member.islnk():
            target = tuple(clean_entry_name(member.linkname))
            if target not in self.non_dirs or target == tuple(parts):
                raise UnsafeLayerEntry(f"layer entry {member.name!r} is a hard link to {member.linkname!r}, "
                                       "which is not an earlier file of this layer")
        if not self.same_owner and (member.ischr() or member.isblk()):
            raise LayerError(f"layer entry {member.name!r} is a device node; unpacking it needs root")
        parent = self._open_dir(parts[:-1], create=True, entry=member.name)
        try:
            self._add_leaf(parent, tuple(parts), member, tar)
        finally:
            os.close(parent)

    def _add_leaf(self, parent: int, key: tuple[str, ...], member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        name = key[-1]
        existing = _lstat(name, parent)
        if member.isdir():
            replaced_whiteout = key in self.whiteouts
            if existing is not None and not stat.S_ISDIR(existing.st_mode):
                os.unlink(name, dir_fd=parent)
                existing = None
            if existing is None:
                os.mkdir(name, 0o700, dir_fd=parent)
            # A directory entry over a directory keeps its children (and their
            # hard-link eligibility); over anything else it replaces one name.
            self.non_dirs.discard(key)
            self.whiteouts.discard(key)
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            try:
                self._set_dir_metadata(fd, key, member)
                if replaced_whiteout:
                    # The same layer deleted the lower directory and made a new
                    # one: overlayfs says that with an opaque directory.
                    os.setxattr(fd, OVERLAY_OPAQUE_XATTR, b"y")
            finally:
                os.close(fd)
            return
        if existing is not None:
            if stat.S_ISDIR(existing.st_mode):
                shutil.rmtree(name, dir_fd=parent)
                # Rare (a file replacing a directory of the same layer), so a scan is fine.
                self.non_dirs = {k for k in self.non_dirs if k[:len(key)] != key}
            else:
                os.unlink(name, dir_fd=parent)
            self.non_dirs.discard(key)
            self.whiteouts.discard(key)
        if member.isreg():
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=parent)
            try:
                _copy_member(tar, member, fd)
                self._set_metadata(fd, member)
                os.utime(fd, ns=_times_ns(member))
            finally:
                os.close(fd)
        elif member.islnk():
            target = clean_entry_name(member.linkname)
            target_parent = self._open_dir(target[:-1], create=False, entry=member.name)
            try:
                os.link(target[-1], name, src_dir_fd=target_parent, dst_dir_fd=parent, follow_symlinks=False)
            finally:
                os.close(target_parent)
            # A hard link shares its target's inode and metadata: nothing to set.
        elif member.issym():
            os.symlink(member.linkname, name, dir_fd=parent)
            self._set_link_metadata(parent, name, member)
        elif member.ischr() or member.isblk() or member.isfifo():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
            device = os.makedev(member.devmajor, member.devminor) if kind != stat.S_IFIFO else 0
            os.mknod(name, kind | 0o600, device, dir_fd=parent)
            self._set_node_metadata(parent, name, member)
        else:
            raise LayerError(f"layer entry {member.name!r} has unsupported type {member.type!r}")
        self.non_dirs.add(key)

    def _whiteout(self, member: tarfile.TarInfo, parts: list[str]) -> None:
        base = parts[-1]
        parent = self._open_dir(parts[:-1], create=True, entry=member.name)
        try:
            if base == WHITEOUT_OPAQUE:
                os.setxattr(parent, OVERLAY_OPAQUE_XATTR, b"y")
                return
            if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
                return   # aufs bookkeeping (.wh..wh.plnk, ...): meaningless here, Docker skips it too
            name = base[len(WHITEOUT_PREFIX):]
            if not name or name in (".", ".."):
                raise UnsafeLayerEntry(f"layer entry {member.name!r} is a whiteout of nothing")
            key = (*parts[:-1], name)
            existing = _lstat(name, parent)
            if existing is not None:
                # SPEC: a whiteout hides lower layers only, never an entry of its
                # own layer (image-spec layer.md); a directory of this layer
                # becomes opaque, so the lower one is hidden and ours is kept.
                if stat.S_ISDIR(existing.st_mode):
                    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
                    try:
                        os.setxattr(fd, OVERLAY_OPAQUE_XATTR, b"y")
                    finally:
                        os.close(fd)
                return
            # overlayfs' whiteout: a character device 0/0 (Documentation/filesystems/overlayfs.rst).
            os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=parent)
            self.whiteouts.add(key)
        finally:
            os.close(parent)

    # -- metadata (rule 5)

    def _set_metadata(self, fd: int, member: tarfile.TarInfo) -> None:
        if self.same_owner:
            os.fchown(fd, member.uid, member.gid)
        os.fchmod(fd, member.mode & 0o7777)
        for key, value in _xattrs(member):
            self._setxattr(fd, key, value, member)

    def _set_dir_metadata(self, fd: int, key: tuple[str, ...], member: tarfile.TarInfo) -> None:
        self._set_metadata(fd, member)
        self.dir_times.append((key, *_times_ns(member)))

    def _set_link_metadata(self, parent: int, name: str, member: tarfile.TarInfo) -> None:
        if self.same_owner:
            os.chown(name, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        # Symlinks have no mode of their own on Linux; xattrs go through the
        # parent's /proc/self/fd link, since os.setxattr takes no dir_fd.
        for key, value in _xattrs(member):
            self._setxattr(f"/proc/self/fd/{parent}/{name}", key, value, member)
        os.utime(name, ns=_times_ns(member), dir_fd=parent, follow_symlinks=False)

    def _set_node_metadata(self, parent: int, name: str, member: tarfile.TarInfo) -> None:
        if self.same_owner:
            os.chown(name, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        # We made this node an instant ago in our private temp dir: it is not a symlink.
        os.chmod(name, member.mode & 0o7777, dir_fd=parent)
        for key, value in _xattrs(member):
            self._setxattr(f"/proc/self/fd/{parent}/{name}", key, value, member)
        os.utime(name, ns=_times_ns(member), dir_fd=parent, follow_symlinks=False)

    def _setxattr(self, target: int | str, key: str, value: bytes, member: tarfile.TarInfo) -> None:
        try:
            if isinstance(target, int):
                os.setxattr(target, key, value)
            else:
                os.setxattr(target, key, value, follow_symlinks=False)
        except OSError as exc:
            # A filesystem without xattrs, or a namespace only root may write:
            # the file is still right for every other purpose.
            if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                return
            if exc.errno == errno.EPERM and not self.same_owner and not key.startswith("user."):
                return
            raise LayerError(f"failed to set xattr {key} on layer entry {member.name!r}: {exc.strerror}") from exc

    def finish(self) -> None:
        """Directory times, deepest first, after every child is written (rule 5)."""
        for key, atime, mtime in sorted(self.dir_times, key=lambda t: len(t[0]), reverse=True):
            try:
                fd = self._open_dir(key, create=False, entry="/".join(key))
            except (OSError, LayerError):
                continue   # replaced by a later entry
            try:
                os.utime(fd, ns=(atime, mtime))
            finally:
                os.close(fd)


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None


def _times_ns(member: tarfile.TarInfo) -> tuple[int, int]:
    mtime = int(float(member.pax_headers.get("mtime", member.mtime)) * 1_000_000_000)
    atime = member.pax_headers.get("atime")
    return (int(float(atime) * 1_000_000_000) if atime is not None else mtime), mtime


def _xattrs(member: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    out = []
    for key, value in sorted(member.pax_headers.items()):
        if key.startswith(_PAX_XATTR):
            name = key[len(_PAX_XATTR):]
            if not name.startswith(_OVERLAY_XATTR_PREFIX):   # rule 4
                out.append((name, value.encode("utf-8", "surrogateescape")))
    return out


def _copy_member(tar: tarfile.TarFile, member: tarfile.TarInfo, fd: int) -> None:
    source = tar.extractfile(member)
    written = 0
    if source is not None:
        while chunk := source.read(_CHUNK):
            view = memoryview(chunk)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            written += len(chunk)
    if written != member.size:
        raise LayerError(f"layer entry {member.name!r} is truncated: {written} of {member.size} bytes")


# ---------------------------------------------------------------- packing


class _HashingWriter:
    """A write-only file that hashes what goes through it; tarfile needs ``tell``."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._pos = 0
        self.hasher = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self._out.write(data)
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos


def pack_directory(src: Path, *, out_dir: Path | None = None, whiteouts: bool = False,
                   exclude: frozenset[str] = frozenset()) -> tuple[Path, str]:
    """Write the tree under ``src`` as an uncompressed layer tar.

    The output depends only on the tree: entries sorted by name, mtimes in
    whole seconds, numeric owners without user names (which would depend on
    this host's /etc/passwd), PAX for long names and xattrs. ``src`` itself is
    not an entry.

    Args:
        src: the directory to pack.
        out_dir: where the tar is created (a temp name); the default temp dir otherwise.
        whiteouts: ``src`` is an overlay upper dir: a 0/0 character device
            becomes a ``.wh.<name>`` entry and an opaque directory gets a
            ``.wh..wh..opq`` entry, the OCI forms.
        exclude: entry names (``etc/hostname``) left out, with everything below them.

    Returns:
        (path of the tar, which the caller removes; its diff id, which is also its digest)

    Raises:
        LayerError: ``src`` is not a readable directory.
    """
    src = Path(src)
    if not src.is_dir():
        raise LayerError(f"cannot pack {src}: not a directory")
    fd, name = tempfile.mkstemp(dir=out_dir, prefix=".tmp-layer-", suffix=".tar")
    path = Path(name)
    try:
        with open(fd, "wb") as out:
            writer = _HashingWriter(out)
            with tarfile.open(fileobj=writer, mode="w", format=tarfile.PAX_FORMAT,
                              encoding="utf-8", errors="surrogateescape") as tar:
                _pack_tree(tar, src, "", {}, whiteouts=whiteouts, exclude=exclude)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise LayerError(f"failed to pack {src} into {path}: {exc}") from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, "sha256:" + writer.hasher.hexdigest()


def _pack_tree(tar: tarfile.TarFile, directory: Path, prefix: str, inodes: dict[tuple[int, int], str],
               *, whiteouts: bool, exclude: frozenset[str] = frozenset()) -> None:
    # Byte order, not locale order: the same on every host.
    for name in sorted(os.listdir(directory), key=os.fsencode):
        path = directory / name
        arcname = prefix + name
        if arcname in exclude:
            continue
        st = os.lstat(path)
        xattrs = _read_xattrs(path)
        if whiteouts and stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            tar.addfile(_info(prefix + WHITEOUT_PREFIX + name, st, tarfile.REGTYPE, {}))
            continue
        if stat.S_ISSOCK(st.st_mode):
            continue   # a socket is a live endpoint, not content (Docker skips them too)
        if stat.S_ISDIR(st.st_mode):
            tar.addfile(_info(arcname, st, tarfile.DIRTYPE, xattrs))
            if whiteouts and xattrs.get(OVERLAY_OPAQUE_XATTR) == "y":
                tar.addfile(_info(f"{arcname}/{WHITEOUT_OPAQUE}", st, tarfile.REGTYPE, {}))
            _pack_tree(tar, path, arcname + "/", inodes, whiteouts=whiteouts, exclude=exclude)
            continue
        if st.st_nlink > 1:
            first = inodes.setdefault((st.st_dev, st.st_ino), arcname)
            if first != arcname:
                info = _info(arcname, st, tarfile.LNKTYPE, {})
                info.linkname = first
                tar.addfile(info)
                continue
        if stat.S_ISREG(st.st_mode):
            info = _info(arcname, st, tarfile.REGTYPE, xattrs)
            info.size = st.st_size
            with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as f:
                tar.addfile(info, f)
        elif stat.S_ISLNK(st.st_mode):
            info = _info(arcname, st, tarfile.SYMTYPE, xattrs)
            info.linkname = os.readlink(path)
            tar.addfile(info)
        else:
            kind = {stat.S_IFCHR: tarfile.CHRTYPE, stat.S_IFBLK: tarfile.BLKTYPE,
                    stat.S_IFIFO: tarfile.FIFOTYPE}[stat.S_IFMT(st.st_mode)]
            info = _info(arcname, st, kind, xattrs)
            if kind != tarfile.FIFOTYPE:
                info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            tar.addfile(info)


def _info(arcname: str, st: os.stat_result, kind: bytes, xattrs: dict[str, str]) -> tarfile.TarInfo:
    info = tarfile.TarInfo(arcname)
    info.type = kind
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mtime = int(st.st_mtime)
    info.pax_headers = {_PAX_XATTR + k: v for k, v in sorted(xattrs.items()) if not k.startswith(_OVERLAY_XATTR_PREFIX)}
    return info


def _read_xattrs(path: Path) -> dict[str, str]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    out = {}
    for name in sorted(names):
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False).decode("utf-8", "surrogateescape")
        except OSError as exc:
            if exc.errno != errno.ENODATA:   # removed meanwhile
                raise
    return out
