"""Images: a content store, shared snapshots, and an index of tags.

Under a data root (``/var/lib/corral`` by default)::

    content/blobs/sha256/<hex>   layers as imported, image configs, manifests (runtime.content)
    snapshots/<chain-hex>/       one unpacked layer each, shared by every image that has it
    images.json                  the index: image id -> manifest digest, tags, size
    tmp/                         scratch for imports (packed directories, busybox roots)

An image is an OCI manifest and config in the content store; its id is the
config's digest, as Docker's. A snapshot is named by its layer's chain id
(``protocols.oci_image.chain_ids``), which names the layer *and every layer
under it*, so two images share a snapshot exactly when they share the stack
below it. The directory name is the chain id's hex without ``sha256:``,
because ``:`` separates lower dirs in overlayfs options.

Rules:

1. Every mutation (import, tag, remove) holds the index's lock from the first
   blob it writes to the last snapshot it deletes: a remove can never delete a
   blob or snapshot that an import in progress is about to reference.
   TODO: that serialises imports; containerd's leases are the way to relax it.
2. Readers (``get``, ``list``) take no lock: the index file is replaced by
   rename, and blobs and snapshots of a listed image stay until a remove
   that holds the lock.
3. ``import`` follows ``docker import``: the tar is one layer, the config is
   empty unless given (no Cmd, no Env; SPEC: Docker adds PATH when it creates
   the container, not in the image, and so will the engine). Compressed tars
   are stored as given (gzip, zstd); bzip2 and xz, which have no OCI layer
   media type, are stored uncompressed.
4. The engine must not remove an image a container uses (its snapshots are
   lower dirs of a mounted overlay); that check lives with the containers.

``make_busybox_rootfs`` fills a directory from the host's busybox-static; the
demo, the tests and the benchmarks run it, and ``bootstrap_busybox`` imports it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from protocols.oci_image import (
    DEFAULT_PATH_ENV,
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_LAYER,
    MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_LAYER_ZSTD,
    ContainerConfig,
    Descriptor,
    ImageConfig,
    ImageFormatError,
    Manifest,
    chain_ids,
    encode_image_config,
    encode_manifest,
    familiar_name,
    format_timestamp,
    goarch,
    parse_digest,
    parse_image_config,
    parse_manifest,
    parse_reference,
)

from . import overlay
from .content import ContentStore
from .errors import HostError, MountError
from .layers import (
    SnapshotExists,
    detect_compression,
    diff_id_of,
    open_decompressed,
    pack_directory,
    unpack_layer,
)

BUSYBOX = Path("/bin/busybox")
_DIRS = ("proc", "dev", "sys", "tmp", "etc", "root")
_TMP_PREFIX = ".tmp-"
_LAYER_MEDIA_TYPE = {"": MEDIA_TYPE_OCI_LAYER, "gzip": MEDIA_TYPE_OCI_LAYER_GZIP, "zstd": MEDIA_TYPE_OCI_LAYER_ZSTD}


class ImageError(HostError):
    """An image operation failed: bad reference, conflict, unreadable store."""


class ImageNotFound(ImageError):
    """No image has this reference, id or id prefix."""


def make_busybox_rootfs(path: Path, *, busybox: Path = BUSYBOX) -> Path:
    """Fill ``path`` (created, must not exist) with busybox and a symlink per applet in /bin.

    Raises:
        HostError: the busybox binary is missing or cannot list its applets.
    """
    if not busybox.is_file():
        raise HostError(f"{busybox} is missing (Debian package busybox-static)")
    try:
        applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise HostError(f"cannot list the applets of {busybox}: {exc}") from exc
    (path / "bin").mkdir(parents=True)
    shutil.copy2(busybox, path / "bin/busybox")
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", path / "bin" / applet)
    for d in _DIRS:
        (path / d).mkdir(exist_ok=True)
    return path


# ---------------------------------------------------------------- the index


@dataclass(frozen=True)
class ImageRecord:
    """One row of the index: what is not in the image's own blobs."""

    id: str                      # the config digest
    manifest: str                # the manifest digest
    tags: tuple[str, ...] = ()   # normalised: docker.io/library/busybox:latest
    size: int = 0                # bytes in its snapshots, as `docker images` shows
    digests: tuple[str, ...] = ()   # name@manifest-digest where a registry has it (pull, push)
    parent: str = ""             # the image it was committed on (build, commit); "" for pulled or imported


class JsonImageIndex:
    """The image index as one JSON file, replaced atomically (tmp + fsync + rename).

    Kept small on purpose: the state database will replace it, with
    ``transaction()`` becoming one SQLite transaction (BEGIN IMMEDIATE).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    def load(self) -> dict[str, ImageRecord]:
        """Every record by image id; no lock needed (the file is replaced whole)."""
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ImageError(f"cannot read the image index {self.path}: {exc}") from exc
        return {image_id: ImageRecord(image_id, r["manifest"], tuple(r.get("tags", ())), int(r.get("size", 0)),
                                      tuple(r.get("digests", ())), r.get("parent", ""))
                for image_id, r in doc.get("images", {}).items()}

    @contextlib.contextmanager
    def transaction(self) -> Iterator[dict[str, ImageRecord]]:
        """Lock the index, yield its records to change in place, write them back on success."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            # flock, not fcntl locks: per open file, so threads of one daemon exclude each other too.
            fcntl.flock(lock, fcntl.LOCK_EX)
            records = self.load()
            before = dict(records)
            yield records
            if records != before:
                self._write(records)
        finally:
            os.close(lock)

    def _write(self, records: dict[str, ImageRecord]) -> None:
        doc = {"images": {r.id: {"manifest": r.manifest, "tags": list(r.tags), "size": r.size,
                                 **({"digests": list(r.digests)} if r.digests else {}),
                                 **({"parent": r.parent} if r.parent else {})}
                          for r in sorted(records.values(), key=lambda r: r.id)}}
        tmp = self.path.with_name(f"{_TMP_PREFIX}{self.path.name}-{uuid.uuid4().hex[:12]}")
        try:
            with open(tmp, "w") as f:
                json.dump(doc, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ImageError(f"failed to write the image index {self.path}: {exc.strerror or exc}") from exc


# ---------------------------------------------------------------- images


@dataclass(frozen=True)
class Image:
    """An image as the engine uses it; built from its record, manifest and config."""

    id: str
    repo_tags: tuple[str, ...]   # familiar form: busybox:latest
    created: str | None
    size: int
    diff_ids: tuple[str, ...]
    chain_ids: tuple[str, ...]
    config: ContainerConfig
    image_config: ImageConfig
    manifest_digest: str
    layer_dirs: tuple[Path, ...]
    repo_digests: tuple[str, ...] = ()   # familiar name@sha256:... (docker's RepoDigests)
    parent: str = ""                     # the image it was committed on (docker's Parent), if any

    @property
    def short_id(self) -> str:
        return self.id.partition(":")[2][:12]

    def rootfs_layers(self) -> list[Path]:
        """The snapshot directories, bottom first; overlayfs wants them reversed."""
        return list(self.layer_dirs)


class ImageStore:
    """Images under a data root (module docstring); every method is blocking."""

    def __init__(self, root: Path, *, index: JsonImageIndex | None = None) -> None:
        self.root = Path(root)
        self.content = ContentStore(self.root / "content")
        self.snapshots = self.root / "snapshots"
        self.index = index if index is not None else JsonImageIndex(self.root / "images.json")
        self.tmp = self.root / "tmp"

    def snapshot_dir(self, chain_id: str) -> Path:
        return self.snapshots / parse_digest(chain_id)[1]

    # -- reading

    def list(self) -> list[Image]:
        """Every image, newest first (``docker images`` order)."""
        images = [self._image(r) for r in self.index.load().values()]
        return sorted(images, key=lambda i: (i.created or "", i.id), reverse=True)

    def get(self, ref: str) -> Image:
        """The image named by a tag (``busybox``, ``busybox:1.36``), an id, or a unique id prefix.

        Raises:
            ImageNotFound: nothing matches.
            ImageError: an id prefix matches more than one image.
        """
        return self._image(self._resolve(self.index.load(), ref))

    # -- writing

    def import_tar(self, path: Path, reference: str | None = None, *, config: ContainerConfig | None = None,
                   comment: str | None = None) -> Image:
        """``docker import``: a root filesystem tarball (plain or compressed) as a one-layer image.

        Args:
            path: the tar.
            reference: the tag to give it (moved from any image that had it), or None.
            config: the container config (``docker import --change``); empty by default (rule 3).
            comment: the history comment; ``Imported from <path>`` by default.

        Raises:
            ImageError: a bad reference. LayerError / ContentError: a bad tar or an unwritable store.
        """
        tag = self._normalise(reference)
        path = Path(path)
        with self.index.transaction() as records:
            with open(path, "rb") as f:
                compression = detect_compression(f.read(6))
                f.seek(0)
                if compression in ("bzip2", "xz"):
                    with open_decompressed(f) as stream:   # rule 3: no media type for these
                        digest = self.content.write_blob(stream)
                    compression = ""
                else:
                    digest = self.content.write_blob(f)
            with self._dropped_on_failure(records, digest):
                blob = self.content.blob_path(digest)
                diff_id = digest if compression == "" else diff_id_of(blob)
                layer = Descriptor(_LAYER_MEDIA_TYPE[compression], digest, blob.stat().st_size)
                return self._add_image(records, [(layer, diff_id)], tag, config or ContainerConfig(),
                                       comment if comment is not None else f"Imported from {path}")

    def import_directory(self, path: Path, reference: str | None = None, *, config: ContainerConfig | None = None,
                         comment: str | None = None) -> Image:
        """A directory tree as a one-layer image (packed with ``layers.pack_directory``).

        Raises:
            as ``import_tar``.
        """
        tag = self._normalise(reference)
        self.tmp.mkdir(parents=True, exist_ok=True)
        tar, diff_id = pack_directory(Path(path), out_dir=self.tmp)
        try:
            with self.index.transaction() as records:
                with open(tar, "rb") as f:
                    digest = self.content.write_blob(f, expected_digest=diff_id)
                with self._dropped_on_failure(records, digest):
                    layer = Descriptor(MEDIA_TYPE_OCI_LAYER, digest, self.content.size(digest))
                    return self._add_image(records, [(layer, diff_id)], tag, config or ContainerConfig(),
                                           comment if comment is not None else f"Imported from {path}")
        finally:
            tar.unlink(missing_ok=True)

    def commit(self, parent: str | None, layer_dir: Path | None, reference: str | None = None, *,
               config: ContainerConfig, history: dict | None = None, author: str = "", whiteouts: bool = False,
               exclude: frozenset[str] = frozenset(), extra: dict | None = None) -> Image:
        """A new image on top of ``parent``: its layers, plus ``layer_dir`` packed as one more.

        ``docker commit`` passes a container's upper dir with ``whiteouts`` (overlay
        whiteouts and opaque dirs become the OCI ``.wh.`` forms); ``build`` passes the
        directory a COPY filled, or None for a step that changes only the config
        (its history entry says ``empty_layer``, as Docker's).

        Args:
            parent: the image below (id, tag or prefix); None for ``FROM scratch``.
            config: the new image's container config (not merged with the parent's).
            history: the new history entry (``created_by``, ``comment``); ``created`` is added.
            author: the image config's ``author``.
            exclude: entry names of ``layer_dir`` left out (``etc/hostname``).
            extra: more image config fields (``container``).

        Raises:
            ImageNotFound: no ``parent``. ImageError: a bad reference. LayerError / ContentError.
        """
        tag = self._normalise(reference)
        base = self.get(parent) if parent is not None else None
        tar = diff_id = None
        if layer_dir is not None:
            self.tmp.mkdir(parents=True, exist_ok=True)
            tar, diff_id = pack_directory(Path(layer_dir), out_dir=self.tmp, whiteouts=whiteouts, exclude=exclude)
        try:
            with self.index.transaction() as records:
                layers: list[tuple[Descriptor, str]] = []
                if base is not None:
                    if base.id not in records:
                        raise ImageNotFound(f"no such image: {parent}")
                    manifest = parse_manifest(self.content.read_blob(base.manifest_digest))
                    layers = list(zip(manifest.layers, base.diff_ids))
                now = format_timestamp(time.time_ns())
                entry = {"created": now, **(history or {})}
                digest = None
                if tar is not None:
                    with open(tar, "rb") as f:
                        digest = self.content.write_blob(f, expected_digest=diff_id)
                    layers.append((Descriptor(MEDIA_TYPE_OCI_LAYER, digest, self.content.size(digest)), diff_id))
                else:
                    entry["empty_layer"] = True
                with (self._dropped_on_failure(records, digest) if digest else contextlib.nullcontext()):
                    image_config = ImageConfig(
                        architecture=base.image_config.architecture if base else goarch(os.uname().machine),
                        os="linux", variant=base.image_config.variant if base else "",
                        diff_ids=tuple(d for _, d in layers), config=config, created=now, author=author,
                        history=(*(base.image_config.history if base else ()), entry), extra=dict(extra or {}),
                    )
                    config_bytes = encode_image_config(image_config)
                    config_digest = self.content.write_blob(config_bytes)
                    manifest_bytes = encode_manifest(Manifest(
                        config=Descriptor(MEDIA_TYPE_OCI_CONFIG, config_digest, len(config_bytes)),
                        layers=tuple(layer for layer, _ in layers),
                    ))
                    manifest_digest = self.content.write_blob(manifest_bytes)
                    return self.register(records, config_digest, manifest_digest, layers,
                                         [tag] if tag is not None else [], parent=base.id if base else "")
        finally:
            if tar is not None:
                tar.unlink(missing_ok=True)

    def bootstrap_busybox(self, reference: str = "busybox:latest", *, busybox: Path = BUSYBOX) -> Image:
        """The host's busybox-static as an image: every applet in /bin, Cmd ["sh"] as Docker Hub's busybox.

        Raises:
            HostError: no busybox; as ``import_directory`` otherwise.
        """
        self.tmp.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.tmp, prefix=_TMP_PREFIX) as scratch:
            rootfs = make_busybox_rootfs(Path(scratch) / "rootfs", busybox=busybox)
            config = ContainerConfig(env=(DEFAULT_PATH_ENV,), cmd=("sh",))
            return self.import_directory(rootfs, reference, config=config, comment=f"corral bootstrap from {busybox}")

    def tag(self, source: str, reference: str) -> Image:
        """Give the image named by ``source`` the tag ``reference`` (moved if another image has it).

        Raises:
            ImageNotFound, ImageError: as ``get``, or a bad ``reference``.
        """
        tag = self._normalise(reference)
        with self.index.transaction() as records:
            record = self._resolve(records, source)
            self._move_tag(records, tag, record.id)
            return self._image(records[record.id])

    def remove(self, ref: str, *, force: bool = False, prune: bool = True,
               in_use: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
        """``docker rmi``: untag; delete the image once no tag is left.

        By tag, only that tag goes, and the image with it if it was the last. By
        id, the image and all its tags go, but only with ``force`` when it has
        more than one (Docker's rule). Blobs and snapshots that another image
        still uses stay. With ``prune`` (Docker's default; ``--no-prune`` turns it
        off), a deleted image's parents go too, nearest first, while they are
        untagged, no other image was committed on them and none is in ``in_use``
        (the ids containers run): the intermediate images of a build.

        Returns:
            What happened, in Docker's words: ``[("Untagged", "busybox:latest"), ("Deleted", "sha256:...")]``.

        Raises:
            ImageNotFound: nothing matches. ImageError: several tags and no ``force``.
        """
        with self.index.transaction() as records:
            record = self._resolve(records, ref)
            tag = self._tag_of(ref)
            if tag is not None and tag in record.tags:
                untag = (tag,)
            elif len(record.tags) > 1 and not force:
                raise ImageError(f"conflict: unable to delete {record.id.partition(':')[2][:12]} (must be forced)"
                                 " - image is referenced in multiple repositories")
            else:
                untag = record.tags
            done = [("Untagged", parse_reference(t).familiar) for t in untag]
            left = tuple(t for t in record.tags if t not in untag)
            if left:
                records[record.id] = replace(record, tags=left)
                return done
            del records[record.id]
            deleted = [record]
            while prune and (parent := records.get(deleted[-1].parent)) is not None and not parent.tags \
                    and parent.id not in in_use and not any(r.parent == parent.id for r in records.values()):
                del records[parent.id]
                deleted.append(parent)
            for gone in deleted:
                self._delete_unused(gone, records)
            return [*done, *(("Deleted", gone.id) for gone in deleted)]

    def add_repo_digest(self, image_id: str, name: str, manifest_digest: str) -> None:
        """Remember that ``name`` (a normalised repository) serves this image as ``manifest_digest``
        (after a pull or a push); one digest per repository, the latest."""
        with self.index.transaction() as records:
            record = records.get(image_id)
            if record is None:
                return
            kept = tuple(d for d in record.digests if d.partition("@")[0] != name)
            records[image_id] = replace(record, digests=(*kept, f"{name}@{manifest_digest}"))

    def layer_sizes(self, image: Image) -> list[int]:
        """Bytes of each of the image's layers as unpacked (``docker history`` SIZE), bottom first."""
        return [snapshot_size(d) if d.is_dir() else 0 for d in image.layer_dirs]

    def gc(self, *, grace_s: float = 600.0) -> tuple[list[str], list[str]]:
        """Delete blobs and snapshots no image references: (blob digests, snapshot names) deleted.

        ``grace_s`` spares what was written that recently: a pull or a build writes
        its blobs before the image that references them is recorded. At daemon
        start-up nothing is in flight and 0 is right.
        """
        now = time.time()
        with self.index.transaction() as records:
            blobs, chain_digests = self.referenced(records, strict=False)
            chains = {parse_digest(c)[1] for c in chain_digests}
            gone_blobs = []
            for digest in list(self.content.digests()):
                if digest not in blobs and now - _mtime(self.content.blob_path(digest)) >= grace_s:
                    if self.content.delete_blob(digest):
                        gone_blobs.append(digest)
            gone_snapshots = []
            if self.snapshots.is_dir():
                for entry in sorted(self.snapshots.iterdir()):
                    if entry.name.startswith(_TMP_PREFIX) or entry.name in chains:
                        continue
                    if now - _mtime(entry) >= grace_s:
                        self.delete_snapshot(entry)
                        gone_snapshots.append(entry.name)
            return gone_blobs, gone_snapshots

    def gc_temp(self) -> None:
        """Remove what interrupted imports left: temp blobs, half snapshots, scratch files.

        .. warning:: call it when no import runs (at daemon start-up).
        """
        self.content.gc_temp()
        if self.snapshots.is_dir():
            for entry in self.snapshots.glob(f"{_TMP_PREFIX}*"):
                shutil.rmtree(entry, ignore_errors=True)
        if self.tmp.is_dir():
            # A build the daemon died in may have left an image view mounted in its scratch dir.
            for point in overlay.mounts_under(self.tmp):
                with contextlib.suppress(MountError):
                    overlay.unmount(Path(point), detach=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- internals

    def _add_image(self, records: dict[str, ImageRecord], layers: list[tuple[Descriptor, str]], tag: str | None,
                   config: ContainerConfig, comment: str) -> Image:
        diff_ids = [diff_id for _, diff_id in layers]
        self._unpack(layers)     # first: a bad layer fails before any config or manifest blob is written
        now = format_timestamp(time.time_ns())
        image_config = ImageConfig(
            architecture=goarch(os.uname().machine), os="linux", diff_ids=tuple(diff_ids), config=config,
            created=now, history=({"created": now, "comment": comment},),
        )
        config_bytes = encode_image_config(image_config)
        config_digest = self.content.write_blob(config_bytes)
        manifest_bytes = encode_manifest(Manifest(
            config=Descriptor(MEDIA_TYPE_OCI_CONFIG, config_digest, len(config_bytes)),
            layers=tuple(layer for layer, _ in layers),
        ))
        manifest_digest = self.content.write_blob(manifest_bytes)
        return self.register(records, config_digest, manifest_digest, layers, [tag] if tag is not None else [])

    def register(self, records: dict[str, ImageRecord], config_digest: str, manifest_digest: str,
                 layers: list[tuple[Descriptor, str]], tags: list[str], *, parent: str = "") -> Image:
        """Make an image of blobs already in the content store: unpack each layer into its
        snapshot (once per chain id, checked against its diff id), record it, move ``tags``
        (normalised) onto it. ``parent``: the image it was committed on. Call inside
        ``index.transaction()``.

        Raises:
            LayerError: a layer is not what its diff id says, or cannot be unpacked.
        """
        size = sum(snapshot_size(snapshot) for snapshot in self._unpack(layers))
        known = records.get(config_digest)
        records[config_digest] = ImageRecord(config_digest, manifest_digest, known.tags if known else (), size,
                                             known.digests if known else (), parent or (known.parent if known else ""))
        for tag in tags:
            self._move_tag(records, tag, config_digest)
        return self._image(records[config_digest])

    def _unpack(self, layers: list[tuple[Descriptor, str]]) -> list[Path]:
        """Each layer's snapshot, unpacked unless it exists (checked against its diff id)."""
        snapshots = []
        for (layer, diff_id), chain in zip(layers, chain_ids([diff_id for _, diff_id in layers])):
            snapshot = self.snapshot_dir(chain)
            if not snapshot.is_dir():
                self.snapshots.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(SnapshotExists):   # another store on this root was quicker
                    unpack_layer(self.content.blob_path(layer.digest), snapshot, expected_diff_id=diff_id)
            snapshots.append(snapshot)
        return snapshots

    @contextlib.contextmanager
    def _dropped_on_failure(self, records: dict[str, ImageRecord], layer_digest: str) -> Iterator[None]:
        """Delete a just-written layer blob if the import fails and no image uses it."""
        try:
            yield
        except BaseException:
            used = {layer.digest for r in records.values()
                    for layer in parse_manifest(self.content.read_blob(r.manifest)).layers}
            if layer_digest not in used:
                self.content.delete_blob(layer_digest)
            raise

    @staticmethod
    def _move_tag(records: dict[str, ImageRecord], tag: str, image_id: str) -> None:
        # An image that loses its last tag this way stays, untagged ("dangling"), as in Docker.
        for other in list(records.values()):
            if tag in other.tags and other.id != image_id:
                records[other.id] = replace(other, tags=tuple(t for t in other.tags if t != tag))
        record = records[image_id]
        if tag not in record.tags:
            records[image_id] = replace(record, tags=(*record.tags, tag))

    def referenced(self, records: dict[str, ImageRecord], *, strict: bool = True) -> tuple[set[str], set[str]]:
        """What ``records`` keep alive: (blob digests: configs, manifests, layers; chain ids).

        ``strict``: a manifest or config that cannot be read raises. Otherwise it is
        skipped, and the image keeps only what could be read of it (its id and
        manifest always, its layers if its manifest reads): the garbage collector
        must not stop at one broken image; rmi removes that one.

        Raises:
            HostError, ImageFormatError: with ``strict``, a record that cannot be read.
        """
        blobs: set[str] = set()
        chains: set[str] = set()
        for r in records.values():
            blobs.update((r.id, r.manifest))
            try:
                blobs.update(layer.digest for layer in parse_manifest(self.content.read_blob(r.manifest)).layers)
                chains.update(chain_ids(parse_image_config(self.content.read_blob(r.id)).diff_ids))
            except (HostError, ImageFormatError):
                if strict:
                    raise
        return blobs, chains

    def _delete_unused(self, gone: ImageRecord, remaining: dict[str, ImageRecord]) -> None:
        manifest = parse_manifest(self.content.read_blob(gone.manifest))
        config = parse_image_config(self.content.read_blob(gone.id))
        used_blobs, used_chains = self.referenced(remaining)
        for chain in chain_ids(config.diff_ids):
            if chain not in used_chains:
                self.delete_snapshot(self.snapshot_dir(chain))
        for digest in (gone.manifest, gone.id, *(layer.digest for layer in manifest.layers)):
            if digest not in used_blobs:
                self.content.delete_blob(digest)

    def delete_snapshot(self, snapshot: Path) -> None:
        # Renamed away first, so a half-deleted snapshot is never taken for a whole one.
        doomed = snapshot.with_name(f"{_TMP_PREFIX}del-{snapshot.name}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(snapshot, doomed)
        except FileNotFoundError:
            return
        shutil.rmtree(doomed)

    def _resolve(self, records: dict[str, ImageRecord], ref: str) -> ImageRecord:
        if ref in records:
            return records[ref]
        if "@" in ref:                      # name@sha256:... as a registry served it (pull, push)
            name, _, digest = ref.partition("@")
            try:
                wanted = f"{parse_reference(name).name}@{digest}"
            except ImageFormatError as exc:
                raise ImageError(str(exc)) from None
            for record in records.values():
                if wanted in record.digests:
                    return record
            raise ImageNotFound(f"no such image: {ref}")
        tag = self._tag_of(ref)
        if tag is not None:
            for record in records.values():
                if tag in record.tags:
                    return record
        prefix = ref.removeprefix("sha256:")
        if prefix and all(c in "0123456789abcdef" for c in prefix):
            matches = [r for r in records.values() if r.id.partition(":")[2].startswith(prefix)]
            if len(matches) > 1:
                raise ImageError(f"image id prefix {ref!r} is ambiguous: {len(matches)} images match")
            if matches:
                return matches[0]
        raise ImageNotFound(f"no such image: {ref}")

    @staticmethod
    def _tag_of(ref: str) -> str | None:
        try:
            return str(parse_reference(ref))
        except ImageFormatError:
            return None   # maybe an id or id prefix

    @staticmethod
    def _normalise(reference: str | None) -> str | None:
        if reference is None:
            return None
        try:
            return str(parse_reference(reference))
        except ImageFormatError as exc:
            raise ImageError(str(exc)) from exc

    def _image(self, record: ImageRecord) -> Image:
        try:
            manifest = parse_manifest(self.content.read_blob(record.manifest))
            config = parse_image_config(self.content.read_blob(record.id))
        except ImageFormatError as exc:
            raise ImageError(f"image {record.id} is corrupt: {exc}") from exc
        chains = tuple(chain_ids(config.diff_ids))
        if len(manifest.layers) != len(chains):
            raise ImageError(f"image {record.id} is corrupt: {len(manifest.layers)} layers "
                             f"but {len(chains)} diff ids")
        return Image(
            id=record.id,
            repo_tags=tuple(parse_reference(t).familiar for t in record.tags),
            created=config.created,
            size=record.size,
            diff_ids=config.diff_ids,
            chain_ids=chains,
            config=config.config,
            image_config=config,
            manifest_digest=record.manifest,
            layer_dirs=tuple(self.snapshot_dir(c) for c in chains),
            repo_digests=tuple(f"{familiar_name(d.partition('@')[0])}@{d.partition('@')[2]}" for d in record.digests),
            parent=record.parent,
        )


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def snapshot_size(path: Path) -> int:
    """Bytes of the files under ``path``, each inode once (what ``du --apparent-size`` counts for files)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for directory, dirs, files in os.walk(path):
        for name in files + dirs:
            st = os.lstat(os.path.join(directory, name))
            if not stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total
