"""``docker save`` and ``docker load``: images to and from tar archives.

Two formats, both read and written:

- **docker-archive** (what ``docker save`` writes, what ``docker load`` and
  ``skopeo ... docker-archive:`` read): ``manifest.json`` lists each image as
  ``{"Config": "<hex>.json", "RepoTags": [...], "Layers": ["<dir>/layer.tar", ...]}``;
  configs are stored byte for byte (so an image keeps its id), layers as
  uncompressed tars, and a legacy ``repositories`` file names each tag's top
  layer for old loaders.
- **OCI image layout** (``--format oci``; ``skopeo ... oci-archive:``):
  ``oci-layout``, ``index.json`` with one manifest descriptor per tag
  (``io.containerd.image.name`` with the full name, as containerd and Docker
  write it, and ``org.opencontainers.image.ref.name`` with the tag), and
  ``blobs/sha256/<hex>`` holding manifests, configs and layers exactly as
  stored, so manifest digests survive the trip.

Rules:

1. Nothing from an archive is trusted. Member names are cleaned and may not
   leave the archive (``..``, absolute paths, symlinks that climb out); every
   blob of an OCI layout is verified against its name as it is written; every
   layer of a docker-archive must match its config's diff id, in order.
2. A load that fails leaves the store as it was: the index is only written
   once every image of the archive is complete, and blobs written for it that
   no image uses are deleted.
3. Blocking and streaming: members go straight from the tar into the content
   store (``ContentStore.write_blob`` on the member's file object), never
   whole into memory; only the small JSON documents are read into memory, up
   to ``MAX_DOCUMENT``.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO

from protocols.oci_image import (
    INDEX_MEDIA_TYPES,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_LAYER,
    MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_LAYER_ZSTD,
    MEDIA_TYPE_OCI_MANIFEST,
    MEDIA_TYPE_OCI_CONFIG,
    Descriptor,
    ImageFormatError,
    Index,
    Manifest,
    encode_index,
    encode_json,
    encode_manifest,
    goarch,
    layer_compression,
    parse_image_config,
    parse_index,
    parse_manifest,
    parse_reference,
)

from .errors import HostError
from .images import Image, ImageStore
from .layers import LayerError, detect_compression, diff_id_of, open_decompressed

MAX_DOCUMENT = 8 << 20            # manifest.json, index.json, a config: JSON, not data
OCI_LAYOUT = {"imageLayoutVersion": "1.0.0"}
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
_LAYER_MEDIA_TYPE = {"": MEDIA_TYPE_OCI_LAYER, "gzip": MEDIA_TYPE_OCI_LAYER_GZIP, "zstd": MEDIA_TYPE_OCI_LAYER_ZSTD}
FORMATS = ("docker", "oci")


class ArchiveFormatError(HostError):
    """The archive is not a docker-archive or OCI layout we can load; the message says why."""


@dataclass(frozen=True)
class Loaded:
    """One image a load made (or found already there)."""

    id: str
    tags: tuple[str, ...]        # familiar form, as ``docker load`` prints them


# ---------------------------------------------------------------- save


def save(store: ImageStore, refs: Iterable[str], out: BinaryIO, *, fmt: str = "docker") -> None:
    """Write the images named by ``refs`` (tags or ids) to ``out`` as one tar.

    A ref that is a tag exports that tag; an id exports the image untagged
    (``docker save`` does the same).

    Raises:
        ImageNotFound / ImageError: a ref names no image. ValueError: unknown ``fmt``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown archive format {fmt!r} (expected one of {', '.join(FORMATS)})")
    chosen: dict[str, list[str]] = {}             # image id -> full tags to export, in order
    images: dict[str, Image] = {}
    for ref in refs:
        image = store.get(ref)
        images[image.id] = image
        tags = chosen.setdefault(image.id, [])
        tag = _as_tag(ref)
        if tag is not None and tag not in tags and parse_reference(tag).familiar in image.repo_tags:
            tags.append(tag)
    # Under the index lock: no rmi deletes a blob while it is being written out.
    with store.index.transaction(), tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        if fmt == "docker":
            _save_docker(store, tar, [(images[i], chosen[i]) for i in chosen])
        else:
            _save_oci(store, tar, [(images[i], chosen[i]) for i in chosen])


def _as_tag(ref: str) -> str | None:
    try:
        return str(parse_reference(ref))
    except ImageFormatError:
        return None


def _save_docker(store: ImageStore, tar: tarfile.TarFile, images: list[tuple[Image, list[str]]]) -> None:
    entries, repositories, written = [], {}, set()
    for image, tags in images:
        config_name = image.id.partition(":")[2] + ".json"
        if config_name not in written:
            _add_bytes(tar, config_name, store.content.read_blob(image.id))
            written.add(config_name)
        manifest = parse_manifest(store.content.read_blob(image.manifest_digest))
        layer_names = []
        for layer, diff_id in zip(manifest.layers, image.diff_ids):
            name = f"{diff_id.partition(':')[2]}/layer.tar"
            if name not in written:
                _add_uncompressed_layer(store, tar, name, layer)
                written.add(name)
            layer_names.append(name)
        familiar = [parse_reference(t).familiar for t in tags]
        entries.append({"Config": config_name, "RepoTags": familiar or None, "Layers": layer_names})
        for tag in tags:
            ref = parse_reference(tag)
            if layer_names:
                repo = ref.familiar.rpartition(":")[0] if ref.tag else ref.familiar
                repositories.setdefault(repo, {})[ref.tag or "latest"] = layer_names[-1].partition("/")[0]
    _add_bytes(tar, "manifest.json", encode_json(entries))
    if repositories:
        _add_bytes(tar, "repositories", encode_json(repositories))


def _add_uncompressed_layer(store: ImageStore, tar: tarfile.TarFile, name: str, layer: Descriptor) -> None:
    """A layer blob as a plain tar member: as stored when it is uncompressed, else
    decompressed into a temp file first (a tar member's size comes before its data)."""
    blob = store.content.blob_path(layer.digest)
    if layer_compression(layer.media_type) == "":
        tar.add(blob, arcname=name, recursive=False, filter=_plain)
        return
    store.tmp.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=store.tmp) as plain, open(blob, "rb") as packed:
        with open_decompressed(packed) as stream:
            shutil.copyfileobj(stream, plain, 1 << 20)
        size = plain.tell()
        plain.seek(0)
        tar.addfile(_member(name, size), plain)


def _save_oci(store: ImageStore, tar: tarfile.TarFile, images: list[tuple[Image, list[str]]]) -> None:
    _add_bytes(tar, "oci-layout", encode_json(OCI_LAYOUT))
    descriptors, written = [], set()
    for image, tags in images:
        manifest_bytes = store.content.read_blob(image.manifest_digest)
        manifest = parse_manifest(manifest_bytes)
        for d in (*manifest.layers, manifest.config):
            if d.digest not in written:
                _add_blob(store, tar, d.digest)
                written.add(d.digest)
        if image.manifest_digest not in written:
            _add_bytes(tar, _blob_name(image.manifest_digest), manifest_bytes)
            written.add(image.manifest_digest)
        base = Descriptor(manifest.media_type, image.manifest_digest, len(manifest_bytes),
                          platform={"architecture": image.image_config.architecture, "os": image.image_config.os})
        if not tags:
            descriptors.append(base)
        for tag in tags:
            ref = parse_reference(tag)
            descriptors.append(Descriptor(base.media_type, base.digest, base.size, platform=base.platform,
                                          annotations={ANNOTATION_IMAGE_NAME: str(ref),
                                                       ANNOTATION_REF_NAME: ref.tag or "latest"}))
    _add_bytes(tar, "index.json", encode_index(Index(manifests=tuple(descriptors), media_type=MEDIA_TYPE_OCI_INDEX)))


def _add_blob(store: ImageStore, tar: tarfile.TarFile, digest: str) -> None:
    tar.add(store.content.blob_path(digest), arcname=_blob_name(digest), recursive=False, filter=_plain)


def _blob_name(digest: str) -> str:
    algorithm, _, hexpart = digest.partition(":")
    return f"blobs/{algorithm}/{hexpart}"


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # The store's own file metadata is nobody's business: root-owned 0644, no times.
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o644
    info.mtime = 0
    return info


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    import io
    tar.addfile(_member(name, len(data)), io.BytesIO(data))


# ---------------------------------------------------------------- load


def load(store: ImageStore, source: BinaryIO) -> list[Loaded]:
    """Load every image of a docker-archive or OCI layout tar (plain or compressed).

    Returns:
        The images, in the archive's order.

    Raises:
        ArchiveFormatError: not an archive of either kind, or one that lies
            (a missing member, a digest or diff id that does not match). The
            store is left as it was (rule 2).
    """
    with store.index.transaction() as records:
        before = set(store.content.digests())
        snapshots_before = _snapshots(store)
        members = _Members(store)
        try:
            try:
                with tarfile.open(fileobj=source, mode="r|*") as tar:
                    for member in tar:
                        members.add(tar, member)
            except (tarfile.TarError, EOFError, OSError) as exc:
                if isinstance(exc, HostError):
                    raise
                raise ArchiveFormatError(f"not a valid image archive: {exc}") from exc
            if "manifest.json" in members.documents:
                plan = _plan_docker(store, members)
            elif "index.json" in members.documents:
                plan = _plan_oci(store, members)
            else:
                raise ArchiveFormatError("not an image archive: it has neither manifest.json (docker-archive) "
                                         "nor index.json (OCI layout)")
            loaded = []
            for config_digest, manifest_digest, layers, tags in plan:
                image = store.register(records, config_digest, manifest_digest, layers, tags)
                loaded.append(Loaded(image.id, tuple(parse_reference(t).familiar for t in tags)))
        except BaseException as exc:
            # The index is not written (the transaction ends in an exception): undo
            # what this load put beside it, judged against the index as it was.
            unchanged = store.index.load()
            _drop_new_blobs(store, before, unchanged)
            for name in _snapshots(store) - snapshots_before:
                store.delete_snapshot(store.snapshots / name)
            if isinstance(exc, (ImageFormatError, LayerError)):
                raise ArchiveFormatError(f"invalid image archive: {exc}") from exc
            raise
        _drop_new_blobs(store, before, records)      # what the archive had that no image uses
        return loaded


def _snapshots(store: ImageStore) -> set[str]:
    return set(os.listdir(store.snapshots)) if store.snapshots.is_dir() else set()


class _Members:
    """The archive's members as they stream by: small JSON documents kept in memory,
    everything else written to the content store (name -> digest), symlinks noted."""

    def __init__(self, store: ImageStore) -> None:
        self._store = store
        self.documents: dict[str, bytes] = {}
        self.blobs: dict[str, str] = {}
        self._links: dict[str, str] = {}

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = _clean(member.name)
        if name is None or member.isdir():
            return
        if member.issym() or member.islnk():
            target = member.linkname if member.islnk() else posixpath.join(posixpath.dirname(name), member.linkname)
            cleaned = _clean(target)
            if cleaned is None:
                raise ArchiveFormatError(f"archive member {member.name!r} links outside the archive")
            self._links[name] = cleaned
            return
        if not member.isreg():
            raise ArchiveFormatError(f"archive member {member.name!r} is not a regular file")
        f = tar.extractfile(member)
        assert f is not None
        if name.endswith(".json") and "/" not in name or name in ("oci-layout", "repositories"):
            if member.size > MAX_DOCUMENT:
                raise ArchiveFormatError(f"archive member {name} is {member.size} bytes: too big for a document")
            self.documents[name] = f.read()
            return
        expected = None
        parts = name.split("/")
        if len(parts) == 3 and parts[0] == "blobs":                # OCI layout: verified as it is written
            expected = f"{parts[1]}:{parts[2]}"
        self.blobs[name] = self._store.content.write_blob(f, expected_digest=expected, expected_size=member.size)

    def document(self, name: str) -> bytes:
        name = self._follow(name)
        if name in self.documents:
            return self.documents[name]
        if name in self.blobs:
            path = self._store.content.blob_path(self.blobs[name])
            if path.stat().st_size > MAX_DOCUMENT:
                raise ArchiveFormatError(f"archive member {name} is too big for a document")
            return path.read_bytes()
        raise ArchiveFormatError(f"the archive has no {name}")

    def blob(self, name: str) -> str:
        name = self._follow(name)
        if name in self.blobs:
            return self.blobs[name]
        if name in self.documents:                                 # a small member kept as a document
            return self._store.content.write_blob(self.documents[name])
        raise ArchiveFormatError(f"the archive has no {name}")

    def _follow(self, name: str) -> str:
        cleaned = _clean(name)
        if cleaned is None:
            raise ArchiveFormatError(f"archive path {name!r} leaves the archive")
        for _ in range(40):
            if cleaned not in self._links:
                return cleaned
            cleaned = self._links[cleaned]
        raise ArchiveFormatError(f"archive path {name!r}: too many levels of links")


def _clean(name: str) -> str | None:
    """A member name as a relative path inside the archive; None for the root itself.

    Raises:
        ArchiveFormatError: it climbs out (``..`` past the top) or is absolute.
    """
    if name.startswith("/"):
        raise ArchiveFormatError(f"archive member {name!r} has an absolute path")
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise ArchiveFormatError(f"archive member {name!r} leaves the archive")
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts) or None


Plan = list[tuple[str, str, list[tuple[Descriptor, str]], list[str]]]


def _plan_docker(store: ImageStore, members: _Members) -> Plan:
    entries = _json(members.document("manifest.json"), "manifest.json")
    if not isinstance(entries, list) or not entries:
        raise ArchiveFormatError("manifest.json: must be a non-empty list of images")
    plan: Plan = []
    for i, entry in enumerate(entries):
        where = f"manifest.json[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) \
                or not isinstance(entry.get("Layers"), list):
            raise ArchiveFormatError(f"{where}: needs Config (a path) and Layers (a list of paths)")
        config_bytes = members.document(entry["Config"])
        config = parse_image_config(config_bytes)
        config_digest = store.content.write_blob(config_bytes)
        if len(entry["Layers"]) != len(config.diff_ids):
            raise ArchiveFormatError(f"{where}: {len(entry['Layers'])} layers but the config names "
                                     f"{len(config.diff_ids)} diff ids")
        layers = []
        for j, (name, diff_id) in enumerate(zip(entry["Layers"], config.diff_ids)):
            if not isinstance(name, str):
                raise ArchiveFormatError(f"{where}.Layers[{j}]: must be a path")
            digest = members.blob(name)
            blob = store.content.blob_path(digest)
            with open(blob, "rb") as f:
                compression = detect_compression(f.read(6))
            if compression not in _LAYER_MEDIA_TYPE:
                raise ArchiveFormatError(f"{where}.Layers[{j}] ({name}): {compression} layers are not supported")
            actual = digest if compression == "" else diff_id_of(blob)
            if actual != diff_id:
                raise ArchiveFormatError(f"{where}.Layers[{j}] ({name}) has diff id {actual}, the config says "
                                         f"{diff_id}")
            layers.append((Descriptor(_LAYER_MEDIA_TYPE[compression], digest, blob.stat().st_size), diff_id))
        manifest_bytes = encode_manifest(Manifest(
            config=Descriptor(MEDIA_TYPE_OCI_CONFIG, config_digest, len(config_bytes)),
            layers=tuple(layer for layer, _ in layers), media_type=MEDIA_TYPE_OCI_MANIFEST))
        manifest_digest = store.content.write_blob(manifest_bytes)
        tags = entry.get("RepoTags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ArchiveFormatError(f"{where}.RepoTags: must be a list of names")
        plan.append((config_digest, manifest_digest, layers, [_tag(t, f"{where}.RepoTags") for t in tags]))
    return plan


def _plan_oci(store: ImageStore, members: _Members) -> Plan:
    layout = _json(members.document("oci-layout"), "oci-layout") if "oci-layout" in members.documents else None
    if not isinstance(layout, dict) or layout.get("imageLayoutVersion") != "1.0.0":
        raise ArchiveFormatError("oci-layout: missing, or not imageLayoutVersion 1.0.0")
    index = parse_index(members.document("index.json"))
    by_manifest: dict[str, tuple[str, list[tuple[Descriptor, str]], list[str]]] = {}
    order: list[str] = []
    for i, d in enumerate(index.manifests):
        manifest_digest, manifest = _pick_manifest(members, d, f"index.json manifests[{i}]")
        if manifest_digest not in by_manifest:
            config_digest = members.blob(_blob_name(manifest.config.digest))
            config = parse_image_config(store.content.read_blob(config_digest))
            if len(manifest.layers) != len(config.diff_ids):
                raise ArchiveFormatError(f"manifest {manifest_digest}: {len(manifest.layers)} layers but its config "
                                         f"names {len(config.diff_ids)} diff ids")
            layers = []
            for layer, diff_id in zip(manifest.layers, config.diff_ids):
                digest = members.blob(_blob_name(layer.digest))
                compression = layer_compression(layer.media_type)
                actual = digest if compression == "" else diff_id_of(store.content.blob_path(digest))
                if actual != diff_id:
                    raise ArchiveFormatError(f"layer {layer.digest} has diff id {actual}, the config says {diff_id}")
                layers.append((layer, diff_id))
            by_manifest[manifest_digest] = (config_digest, layers, [])
            order.append(manifest_digest)
        name = d.annotations.get(ANNOTATION_IMAGE_NAME) or d.annotations.get(ANNOTATION_REF_NAME, "")
        tag = _as_tag(name) if name and ("/" in name or ":" in name) else None    # a bare "latest" names no repo
        if tag is not None and tag not in by_manifest[manifest_digest][2]:
            by_manifest[manifest_digest][2].append(tag)
    return [(by_manifest[m][0], m, by_manifest[m][1], by_manifest[m][2]) for m in order]


def _pick_manifest(members: _Members, d: Descriptor, where: str, depth: int = 0) -> tuple[str, Manifest]:
    """The image manifest ``d`` names: itself, or from an index the entry for this host's platform."""
    digest = members.blob(_blob_name(d.digest))
    document = _store_of(members).content.read_blob(digest)
    if d.media_type in INDEX_MEDIA_TYPES:
        if depth > 2:
            raise ArchiveFormatError(f"{where}: indexes nested too deep")
        arch = goarch(os.uname().machine)
        nested = parse_index(document)
        for entry in nested.manifests:
            platform = entry.platform or {}
            if platform.get("os", "linux") == "linux" and platform.get("architecture", arch) == arch:
                return _pick_manifest(members, entry, where, depth + 1)
        raise ArchiveFormatError(f"{where}: the index has no image for linux/{arch}")
    return digest, parse_manifest(document)


def _store_of(members: _Members) -> ImageStore:
    return members._store


def _tag(name: str, where: str) -> str:
    try:
        return str(parse_reference(name))
    except ImageFormatError as exc:
        raise ArchiveFormatError(f"{where}: {exc}") from exc


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise ArchiveFormatError(f"{what}: not JSON: {exc}") from exc


def _drop_new_blobs(store: ImageStore, before: set[str], records) -> None:
    """Delete blobs this load wrote that no image references (rule 2)."""
    used, _ = store.referenced(records, strict=False)
    for digest in set(store.content.digests()) - before - used:
        store.content.delete_blob(digest)


