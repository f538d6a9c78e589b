"""``cp``, ``export`` and ``diff`` for the Engine: a container's files, running or stopped.

The file work itself is ``runtime.archive`` (resolving inside the root, tar
out, safe tar in, the upper dir's changes), run in worker threads. This module
decides *when* the root is there and moves the bytes.

Rules this module lives by:

1. The container's overlay root is mounted while anyone uses it: its task
   (the container runs) or a copy in flight. ``hold``/``release`` count the
   users under a per-container lock; the first mounts, the last unmounts. The
   Engine's task holds it through the same two calls, so a container that
   stops during an export keeps its root until the export is done, and one
   that starts during a copy finds it mounted.
2. Removing a container first closes its transfers and waits for the copies
   in flight (``forget``): ``rm`` never deletes a directory under a reader.
3. Bulk data is *pulled*, not pushed: a download is a transfer the client
   reads with ``transfer.read`` calls, one chunk per call, and an upload is
   spooled with ``transfer.write`` calls before ``archive_put`` extracts it.
   Every byte waits for the reader, so a slow consumer (``export | gzip``)
   never overflows anything, and frames stay under the request limit.
4. A transfer nobody touched for ``TRANSFER_IDLE_S`` is closed (its client
   went away); at daemon shutdown every transfer is closed.

Rejected: streaming the tar as items of one streaming method. The client
buffers up to 1024 items per stream and cancels the stream beyond that (it
must never stall its reader), so an export to a consumer slower than the
socket fails half way. Rejected: a client-to-server item frame for uploads; it
changes protocol version 1 for one verb, and an anonymous spool file (gone
when closed, or when the daemon dies) costs one extra write.
"""

from __future__ import annotations

import os
import secrets
import signal
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

import trio

from protocols.runtime_spec import parse_spec
from runtime import archive
from runtime.archive import ArchiveError, PathEscapes, PathNotFound
from runtime.errors import HostError

from .errors import Conflict, CorralError, InvalidRequest, NoSuchContainer

if TYPE_CHECKING:
    from .engine import Engine, Entry

TRANSFER_IDLE_S = 60.0
MAX_READ_SIZE = 4 << 20
DEFAULT_READ_SIZE = 1 << 20
# Paths the runtime puts in every container (bind-mount targets), which `docker diff`
# never shows either: Docker keeps them in the container's init layer.
RUNTIME_PATHS = frozenset({"/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/.dockerenv"})


class NoSuchPath(CorralError):
    """The path does not exist in the container (Docker answers 404)."""

    code = "NOT_FOUND"


class NoSuchTransfer(CorralError):
    code = "NOT_FOUND"


def _api_error(exc: HostError) -> CorralError:
    if isinstance(exc, PathNotFound):
        return NoSuchPath(f"could not find the file {str(exc).removeprefix('no such file or directory: ')} "
                          "in container")
    if isinstance(exc, PathEscapes):
        return InvalidRequest(str(exc))
    if isinstance(exc, archive.CopyConflict):
        return Conflict(str(exc))
    return InvalidRequest(str(exc))


class Archive:
    """A tar stream out of a container root; its ``hold`` is released by ``aclose``.

    ``receive_some`` runs the lazy tar producer in a worker thread, one call at
    a time, so ``aclose`` never pulls the root from under a read.
    """

    def __init__(self, files: Files, e: Entry, root: archive.Root, stream: archive.TarStream) -> None:
        self._files, self._entry, self._root, self._stream = files, e, root, stream
        self._lock = trio.Lock()
        self.closed = False
        self.container_id = e.sup.id

    async def receive_some(self, max_bytes: int = DEFAULT_READ_SIZE) -> bytes:
        """The next bytes of the tar, ``b""`` at its end.

        Raises:
            InvalidRequest: the tree could not be read (a file vanished with its parent...).
            trio.ClosedResourceError: after ``aclose``.
        """
        async with self._lock:
            if self.closed:
                raise trio.ClosedResourceError("archive was closed")
            try:
                return await trio.to_thread.run_sync(self._stream.read, max_bytes)
            except HostError as exc:
                raise _api_error(exc) from None
            except OSError as exc:
                raise InvalidRequest(f"reading the container's files failed: {exc}") from None

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            async with self._lock:
                if self.closed:
                    return
                self.closed = True
                self._stream.close()
                self._root.close()
                await self._files.release(self._entry)


class SpooledDownload:
    """A download of a file the daemon wrote first (``image save``): read in a worker
    thread, closed (and, being anonymous, gone) by ``aclose``."""

    container_id = ""             # no container's removal closes it

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._lock = trio.Lock()

    async def receive_some(self, max_bytes: int = DEFAULT_READ_SIZE) -> bytes:
        async with self._lock:
            if self._f.closed:
                raise trio.ClosedResourceError("download was closed")
            return await trio.to_thread.run_sync(self._f.read, max_bytes)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            async with self._lock:
                self._f.close()


# The kernel's filesystems in a running container: Docker's cp sees the rootfs' own
# (empty) directories there, never /proc/kcore or /sys.
_KERNEL_DIRS = frozenset({"/proc", "/sys", "/dev"})


def _live(e: Entry) -> tuple[int, int] | None:
    """(pid, a dup of its pidfd) of a running container's init, taken on the event loop while
    the task keeps the pidfd open; ``_open_root`` closes the dup."""
    child = e.sup.child
    if e.running and e.sup.status == "running" and child is not None:
        return child.pid, os.dup(child.pidfd)
    return None


def _open_root(e: Entry, live: tuple[int, int] | None, path: str, *,
               follow_final: bool) -> tuple[archive.Root, list[str], frozenset[str]]:
    """The root to copy in, ``path`` resolved in it, and the directories to leave empty (worker thread).

    A running container is seen as its processes see it, through /proc/PID/root:
    volumes, tmpfs and bind mounts included, as ``docker cp`` shows them; a
    stopped one through its overlay root with its binds (volumes, ``-v``
    binds, the /etc files) mounted over it where its processes would find
    them (``archive.open_container_root``), so a copy to or from a volume's
    path reaches the volume either way, as in Docker. A path under /proc,
    /sys or /dev of a running one is read from its overlay root alone.

    Raises:
        ArchiveError and its subclasses.
    """
    root = None
    if live is not None:
        pid, pidfd = live
        try:
            root = archive.Root(f"/proc/{pid}/root")
            # Opened first, checked after: if the init is still alive now, the PID was its own.
            signal.pidfd_send_signal(pidfd, 0)
        except (ArchiveError, OSError):
            if root is not None:
                root.close()
            root = None
        finally:
            os.close(pidfd)
    if root is not None:
        try:
            parts = root.resolve(path, follow_final=follow_final)
        except BaseException:
            root.close()
            raise
        if not parts or "/" + parts[0] not in _KERNEL_DIRS:
            return root, parts, _KERNEL_DIRS
        root.close()
        root = archive.Root(e.dir / "rootfs")
    else:
        root = archive.open_container_root(e.dir / "rootfs", parse_spec(e.sup.config), bundle=e.sup.bundle)
    try:
        return root, root.resolve(path, follow_final=follow_final), frozenset()
    except BaseException:
        root.close()
        raise


@dataclass
class _Transfer:
    container_id: str
    download: Archive | None = None
    upload: BinaryIO | None = None
    size: int = 0
    last_used: float = 0.0
    lock: trio.Lock = field(default_factory=trio.Lock)

    async def close(self) -> None:
        if self.download is not None:
            await self.download.aclose()
        if self.upload is not None:
            self.upload.close()
            self.upload = None


class Files:
    """The Engine's file operations and the transfers the RPC adapter drives (rule 3)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._holds: Counter[str] = Counter()
        self._locks: dict[str, trio.Lock] = {}
        self._idle: dict[str, trio.Event] = {}
        self._transfers: dict[str, _Transfer] = {}
        self._sweeping = False
        self.spool_dir = engine.data_root / "tmp"

    # --- the root (rule 1) ----------------------------------------------------------

    async def hold(self, e: Entry) -> None:
        """Count one user of the container's root; mount it if it is the first.

        Raises:
            MountError and the errors of ``Engine._mount`` (the image is gone...).
        """
        async with self._locks.setdefault(e.sup.id, trio.Lock()):
            if not e.mounted:
                await trio.to_thread.run_sync(self._engine._mount, e)
            self._holds[e.sup.id] += 1

    async def release(self, e: Entry) -> None:
        """One user fewer; the last one unmounts. Shielded: it runs in ``finally`` blocks."""
        with trio.CancelScope(shield=True):
            async with self._locks.setdefault(e.sup.id, trio.Lock()):
                self._holds[e.sup.id] -= 1
                if self._holds[e.sup.id] > 0:
                    return
                del self._holds[e.sup.id]
                self._locks.pop(e.sup.id, None)
                try:
                    if e.mounted:
                        await trio.to_thread.run_sync(self._engine._unmount, e)
                finally:
                    idle = self._idle.pop(e.sup.id, None)
                    if idle is not None:
                        idle.set()

    async def forget(self, e: Entry) -> None:
        """Before removal (rule 2): close the container's transfers, wait for its copies in flight."""
        for token, t in list(self._transfers.items()):
            if t.container_id == e.sup.id:
                self._transfers.pop(token, None)
                await t.close()
        while self._holds[e.sup.id] > 0 and not e.running:
            idle = self._idle.setdefault(e.sup.id, trio.Event())
            await idle.wait()

    async def _held(self, ref: str) -> Entry:
        e = self._engine._get(ref)
        await self.hold(e)
        if e.sup.id not in self._engine._containers:        # removed while we mounted
            await self.release(e)
            raise NoSuchContainer(f"no such container: {ref}")
        return e

    # --- Docker's archive API -----------------------------------------------------------

    async def archive_stat(self, ref: str, path: str) -> dict[str, Any]:
        """HEAD /containers/{id}/archive: the path's stat (``name, size, mode, mtime, linkTarget``).

        Raises:
            NoSuchContainer; NoSuchPath; InvalidRequest: a symlink on the path leaves the root.
        """
        e = await self._held(ref)
        try:
            return await trio.to_thread.run_sync(self._stat, e, _live(e), path)
        finally:
            await self.release(e)

    def _stat(self, e: Entry, live: tuple[int, int] | None, path: str) -> dict[str, Any]:
        try:
            root, parts, _ = _open_root(e, live, path, follow_final=archive.wants_directory(path))
            with root:
                return archive.entry_stat(root, parts)
        except HostError as exc:
            raise _api_error(exc) from None

    async def archive_get(self, ref: str, path: str) -> tuple[dict[str, Any], Archive]:
        """GET /containers/{id}/archive: the path's stat and a tar of it, entries named by its base name.

        The caller must ``aclose`` the archive (it keeps the root mounted until then).

        Raises:
            as ``archive_stat``.
        """
        e = await self._held(ref)
        try:
            stat, root, stream = await trio.to_thread.run_sync(self._open_tar, e, _live(e), path)
        except BaseException:
            await self.release(e)
            raise
        return stat, Archive(self, e, root, stream)

    def _open_tar(self, e: Entry, live: tuple[int, int] | None,
                  path: str | None) -> tuple[dict[str, Any], archive.Root, archive.TarStream]:
        if path is None:                                       # export: the overlay, no top entry
            try:
                root = archive.Root(e.dir / "rootfs")
            except HostError as exc:
                raise _api_error(exc) from None
            return {}, root, archive.TarStream(root, [], "")
        try:
            root, parts, skip = _open_root(e, live, path, follow_final=archive.wants_directory(path))
        except HostError as exc:
            raise _api_error(exc) from None
        try:
            stat = archive.entry_stat(root, parts)
            return stat, root, archive.TarStream(root, parts, parts[-1] if parts else "", skip=skip)
        except HostError as exc:
            root.close()
            raise _api_error(exc) from None
        except BaseException:
            root.close()
            raise

    async def archive_put(self, ref: str, path: str, source: BinaryIO, *, no_overwrite_dir_non_dir: bool = True,
                          copy_uid_gid: bool = False) -> None:
        """PUT /containers/{id}/archive: unpack a tar into the directory ``path``.

        Args:
            source: the tar (plain or compressed), read in a worker thread.
            no_overwrite_dir_non_dir: refuse to replace a directory with a non-directory or the reverse.
            copy_uid_gid: keep the entries' owners (``cp -a``); else they are root's, as in Docker.

        Raises:
            NoSuchContainer; NoSuchPath: ``path`` is missing; InvalidRequest: not a
            directory, an unsafe or malformed entry, a symlink leaving the root;
            Conflict: a directory / non-directory clash.
        """
        e = await self._held(ref)
        try:
            await trio.to_thread.run_sync(self._extract, e, _live(e), path, source, no_overwrite_dir_non_dir,
                                          copy_uid_gid)
        finally:
            await self.release(e)

    def _extract(self, e: Entry, live: tuple[int, int] | None, path: str, source: BinaryIO, no_overwrite: bool,
                 same_owner: bool) -> None:
        try:
            root, parts, _ = _open_root(e, live, path, follow_final=True)
            with root:
                archive.extract_into(root, parts, source, same_owner=same_owner,
                                     no_overwrite_dir_non_dir=no_overwrite)
        except HostError as exc:
            raise _api_error(exc) from None

    async def export(self, ref: str) -> Archive:
        """GET /containers/{id}/export: the merged root as a tar (``./``-less names, ``bin/busybox``)."""
        e = await self._held(ref)
        try:
            _, root, stream = await trio.to_thread.run_sync(self._open_tar, e, None, None)
        except BaseException:
            await self.release(e)
            raise
        return Archive(self, e, root, stream)

    async def changes(self, ref: str) -> list[dict[str, Any]]:
        """GET /containers/{id}/changes: ``[{"Path", "Kind"}]``, Kind 0 changed, 1 added, 2 deleted.

        Read from the upper dir and the image's snapshots, so no mount is needed.
        """
        e = self._engine._get(ref)

        def scan() -> list[tuple[str, int]]:
            image = self._engine.images.get(e.image_id)
            entries = archive.scan_upper(e.dir / "upper", image.rootfs_layers(), skip=self._skip(e))
            return archive.classify_changes(entries)

        try:
            found = await trio.to_thread.run_sync(scan)
        except (HostError, OSError) as exc:
            raise InvalidRequest(f"changes of {e.sup.id[:12]}: {exc}") from None
        return [{"Path": p, "Kind": k} for p, k in found]

    @staticmethod
    def _skip(e: Entry) -> frozenset[str]:
        # The targets of the container's own mounts (volumes, tmpfs, etc files): the
        # runtime made them, and what is inside them is not in the upper dir anyway.
        targets = {m["destination"] for m in e.sup.config.get("mounts", [])
                   if m.get("destination") not in ("/proc", "/dev", "/sys")
                   and not str(m.get("destination", "")).startswith(("/proc/", "/dev/", "/sys/"))}
        return frozenset(targets | RUNTIME_PATHS)

    # --- transfers (rules 3 and 4) ----------------------------------------------------------

    def open_download(self, archive_: Archive) -> str:
        """Register an archive for ``read`` calls; its token."""
        token = secrets.token_hex(16)
        self._transfers[token] = _Transfer(archive_.container_id, download=archive_, last_used=trio.current_time())
        self._start_sweeper()
        return token

    def _get_transfer(self, token: str) -> _Transfer:
        t = self._transfers.get(token)
        if t is None:
            raise NoSuchTransfer(f"no such transfer: {token} (finished, closed, or idle for "
                                 f"{TRANSFER_IDLE_S:g} s)")
        t.last_used = trio.current_time()
        return t

    async def read(self, token: str, size: int = DEFAULT_READ_SIZE) -> bytes:
        """The next chunk of a download; ``b""`` once at its end, which closes it."""
        t = self._get_transfer(token)
        if t.download is None:
            raise InvalidRequest(f"transfer {token} is an upload, not a download")
        size = max(1, min(int(size), MAX_READ_SIZE))
        try:
            data = await t.download.receive_some(size)
        except trio.ClosedResourceError:
            raise NoSuchTransfer(f"no such transfer: {token} (closed)") from None
        except BaseException:
            await self.close_transfer(token)
            raise
        if not data:
            await self.close_transfer(token)
        return data

    async def write(self, data: bytes, token: str | None = None) -> str:
        """Append ``data`` to an upload (a new one when ``token`` is None); its token."""
        if not isinstance(data, bytes):
            raise InvalidRequest("transfer.write: data must be bytes (msgpack bin)")
        if token is None:
            def make() -> BinaryIO:
                self.spool_dir.mkdir(mode=0o700, exist_ok=True)
                return tempfile.TemporaryFile(dir=self.spool_dir)   # unlinked: gone with the daemon
            token = secrets.token_hex(16)
            self._transfers[token] = _Transfer("", upload=await trio.to_thread.run_sync(make),
                                               last_used=trio.current_time())
            self._start_sweeper()
        t = self._get_transfer(token)
        if t.upload is None:
            raise InvalidRequest(f"transfer {token} is a download, not an upload")
        async with t.lock:
            await trio.to_thread.run_sync(t.upload.write, data)
            t.size += len(data)
        return token

    def take_upload(self, token: str) -> BinaryIO:
        """The spooled upload, rewound, now the caller's (it closes it)."""
        t = self._get_transfer(token)
        if t.upload is None:
            raise InvalidRequest(f"transfer {token} is a download, not an upload")
        del self._transfers[token]
        f, t.upload = t.upload, None
        f.seek(0)
        return f

    async def close_transfer(self, token: str) -> None:
        t = self._transfers.pop(token, None)
        if t is not None:
            await t.close()

    def _start_sweeper(self) -> None:
        if not self._sweeping:
            self._sweeping = True
            self._engine._nursery.start_soon(self._sweep, name="corral transfers sweeper")

    async def _sweep(self) -> None:
        try:
            while self._transfers:
                await trio.sleep(TRANSFER_IDLE_S / 4)
                now = trio.current_time()
                for token, t in list(self._transfers.items()):
                    if now - t.last_used > TRANSFER_IDLE_S and not t.lock.locked():
                        await self.close_transfer(token)
        finally:
            self._sweeping = False
            with trio.CancelScope(shield=True):        # daemon shutdown: close everything
                for token in list(self._transfers):
                    await self.close_transfer(token)

