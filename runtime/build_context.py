"""The file work of ``build``: the context, read-only views of images, COPY/ADD into a layer dir.

Blocking, no trio; ``supervisor/build.py`` calls these in worker threads.

- ``unpack_context``: the client's context tar into a fresh directory, through
  ``archive.extract_into`` (``layers``' unpacker: no ``..``, nothing through a
  symlink, hard links only to earlier entries).
- ``open_image_view``: an image's snapshots as one read-only tree (an overlay
  with lower dirs only; one snapshot is its own view), to resolve a COPY
  destination through the image's symlinks, read its /etc/passwd, or copy
  ``--from`` a stage.
- ``resolve_sources``, ``hash_sources``, ``copy_sources``: COPY and ADD. Sources
  are resolved inside their root (a symlink leaving it is refused, never
  followed out), globs match one path component at a time, and the files
  travel as ``archive.TarStream`` -> ``archive.extract_into``, the same code as
  ``cp``. The layer dir receives the destination and its parents; a parent
  the image already has keeps the image's mode and owner.

Rules of COPY/ADD (Docker's):

1. A directory source copies its contents, not itself. A file copied to a path
   ending in ``/`` or to an existing directory lands inside it, else it is the
   path. Several sources (or a glob) need a destination ending in ``/``.
2. New files belong to 0:0 unless ``--chown``; modes and times are the source's.
   ADD unpacks a local tar (plain or compressed) into the destination,
   keeping the archive's owners.
3. The cache key of a COPY/ADD hashes the tar stream of its sources: names,
   contents, modes, owners, times, xattrs.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import json
import os
import shutil
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

from . import _syscalls
from .archive import (
    ArchiveError,
    PathNotFound,
    Root,
    TarStream,
    clean_path,
    extract_into,
)
from .errors import HostError
from .layers import detect_compression
from .overlay import escape_path

_GLOB_CHARS = frozenset("*?[")
_CHUNK = 1 << 20


class BuildContextError(HostError):
    """A COPY/ADD or context operation failed; the message says which path and why."""


# ---------------------------------------------------------------- the context


def unpack_context(source, dest: Path) -> None:
    """The context tar (a binary file, plain or compressed) into ``dest`` (created; must not exist).

    Raises:
        BuildContextError: a malformed tar, or an entry that would leave ``dest``.
    """
    dest = Path(dest)
    dest.mkdir(mode=0o700)
    try:
        with Root(dest) as root:
            extract_into(root, [], source, same_owner=True, no_overwrite_dir_non_dir=False)
    except (ArchiveError, OSError) as exc:
        raise BuildContextError(f"cannot unpack the build context: {exc}") from exc


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
    """The entries ``sources`` name in ``root_path`` (the context, or a stage's view), in order.

    A source is relative to the root (a leading ``/`` and ``..`` stay inside it);
    globs (``*``, ``?``, ``[...]``) match names one component at a time.

    Raises:
        BuildContextError: a source that matches nothing, or leaves the root through a symlink.
    """
    out: list[list[str]] = []
    with Root(root_path) as root:
        for source in sources:
            parts = clean_path(source)
            try:
                if not any(c in _GLOB_CHARS for c in source):
                    resolved = root.resolve("/".join(parts), follow_final=True)
                    root.lstat(resolved)
                    out.append(resolved)
                    continue
                matches = _glob(root, parts)
            except PathNotFound:
                raise BuildContextError(f"file not found in build context or excluded by .dockerignore: "
                                        f"stat {source}: file does not exist") from None
            except ArchiveError as exc:
                raise BuildContextError(f"source {source}: {exc}") from None
            if not matches:
                raise BuildContextError(f"no source files were specified: {source} matches nothing")
            out.extend(matches)
    return out


def _glob(root: Root, pattern: list[str]) -> list[list[str]]:
    found: list[list[str]] = [[]]
    for i, part in enumerate(pattern):
        final = i == len(pattern) - 1
        nxt: list[list[str]] = []
        for base in found:
            if not any(c in _GLOB_CHARS for c in part):
                candidates = [part]
            else:
                try:
                    fd = root.open_dir(base)
                except OSError:
                    continue                    # not a directory (or a symlink): no match below it
                try:
                    candidates = sorted(n for n in os.listdir(fd) if fnmatch.fnmatchcase(n, part))
                finally:
                    os.close(fd)
            for name in candidates:
                try:
                    resolved = root.resolve("/".join([*base, name]), follow_final=True)
                    root.lstat(resolved)
                except PathNotFound:
                    continue
                if not final and not stat.S_ISDIR(root.lstat(resolved).st_mode):
                    continue
                nxt.append(resolved)
        found = nxt
    return found


def hash_sources(root_path: Path, entries: list[list[str]]) -> str:
    """Rule 3: ``sha256:<hex>`` over the tar streams of ``entries`` (each named by its base name)."""
    hasher = hashlib.sha256()
    with Root(root_path) as root:
        for parts in entries:
            hasher.update(("/" + "/".join(parts) + "\0").encode("utf-8", "surrogateescape"))
            stream = TarStream(root, parts, parts[-1] if parts else "")
            try:
                while chunk := stream.read(_CHUNK):
                    hasher.update(chunk)
            except ArchiveError as exc:
                raise BuildContextError(f"cannot read {'/' + '/'.join(parts)}: {exc}") from exc
            finally:
                stream.close()
    return "sha256:" + hasher.hexdigest()


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


# ---------------------------------------------------------------- the layer cache


BUILD_CACHE_FILE = "build-cache.json"     # under the data root


class BuildCache:
    """The build cache index: cache key -> image id, one JSON file under the data root.

    Written whole (tmp + fsync + rename) under a flock, as the image index is. An
    entry is only a hint: ``build`` checks that its image still exists, and drops
    the entry when it does not (an ``rmi`` of an intermediate image needs nothing else).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")

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
    "BuildCache", "BuildContextError", "cache_key", "copy_sources", "ensure_directory", "hash_sources",
    "is_directory", "make_parents", "open_image_view", "read_file", "remove_tree", "resolve_sources", "unpack_context",
]
