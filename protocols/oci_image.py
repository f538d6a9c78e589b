"""OCI image documents: config, manifest, index, digests, chain ids, references.

Pure: documents (bytes, str or decoded dicts) in, frozen values out, and back;
nothing here touches a file or a socket. Every parse error is an
``ImageFormatError`` whose message starts with the JSON path of the field
(``config.Env[2]: must be a string``), as ``runtime_spec`` does.

Rules:

1. Parsing is lenient about what we do not act on: unknown fields of the image
   config are kept raw in ``extra`` so a config survives a round trip, as
   Docker's own extra fields (``Healthcheck``, ``OnBuild``, ``Shell``) must.
2. Encoding is canonical (sorted keys, no spaces): the same value always gives
   the same bytes, so the same digest. A digest always names the exact bytes
   stored; we never re-encode a document we read to find its digest.
3. Docker schema 2 manifests and manifest lists are read like their OCI twins;
   schema 1 is refused.

References follow Docker's normalisation (distribution/reference
``ParseNormalizedNamed``): ``busybox`` is ``docker.io/library/busybox:latest``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

from . import _fields
from .errors import RemoteProtocolError

# Media types (image-spec media-types.md, and Docker's schema 2 names).
MEDIA_TYPE_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MEDIA_TYPE_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_TYPE_DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_TYPE_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_TYPE_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFEST_MEDIA_TYPES = frozenset({MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST})
INDEX_MEDIA_TYPES = frozenset({MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_MANIFEST_LIST})

# Layer media type -> compression ("" for a plain tar). The OCI
# "nondistributable" variants are deprecated but still in the wild.
_LAYER_COMPRESSION = {
    MEDIA_TYPE_OCI_LAYER: "",
    MEDIA_TYPE_OCI_LAYER_GZIP: "gzip",
    MEDIA_TYPE_OCI_LAYER_ZSTD: "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
    MEDIA_TYPE_DOCKER_LAYER_GZIP: "gzip",
    MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP: "gzip",
}

# What `docker run` puts in PATH when the image sets none (moby oci/defaults.go).
DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

DEFAULT_DOMAIN = "docker.io"
DEFAULT_TAG = "latest"
_OFFICIAL_PREFIX = "library/"
_LEGACY_DOMAIN = "index.docker.io"


class ImageFormatError(RemoteProtocolError):
    """An image document, digest or reference is malformed; the message names the field."""


# ---------------------------------------------------------------- digests

_DIGEST_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"[0-9a-f]+")


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_digest(digest: str) -> tuple[str, str]:
    """``"sha256:<hex>"`` -> ``("sha256", "<hex>")``, checked.

    Only sha256 and sha512 are accepted, with lower-case hex of the right
    length: a digest later becomes a file name, so nothing else may pass.

    Raises:
        ImageFormatError: anything else.
    """
    if not isinstance(digest, str):
        raise ImageFormatError(f"digest must be a string, got {type(digest).__name__}")
    algorithm, sep, hex_ = digest.partition(":")
    if not sep:
        raise ImageFormatError(f"digest {digest!r} has no algorithm (want sha256:<hex>)")
    length = _DIGEST_HEX_LENGTH.get(algorithm)
    if length is None:
        raise ImageFormatError(f"digest {digest!r}: unsupported algorithm {algorithm!r}")
    if len(hex_) != length or not _HEX.fullmatch(hex_):
        raise ImageFormatError(f"digest {digest!r}: want {length} lower-case hex digits")
    return algorithm, hex_


def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    """The chain id of each layer, bottom to top (image-spec config.md "Layer ChainID").

    ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)).
    A chain id names a layer *and everything under it*, so it names a snapshot.
    """
    out: list[str] = []
    for diff_id in diff_ids:
        parse_digest(diff_id)
        out.append(diff_id if not out else sha256_digest(f"{out[-1]} {diff_id}".encode()))
    return out


def layer_compression(media_type: str) -> str:
    """``""``, ``"gzip"`` or ``"zstd"`` for a layer media type.

    Raises:
        ImageFormatError: not a layer media type we know.
    """
    try:
        return _LAYER_COMPRESSION[media_type]
    except KeyError:
        raise ImageFormatError(f"unsupported layer media type {media_type!r}") from None


def goarch(machine: str) -> str:
    """``os.uname().machine`` -> the GOARCH name OCI platforms use."""
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
            "i386": "386", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}.get(machine, machine)


def format_timestamp(time_ns: int) -> str:
    """RFC 3339 in UTC with nanoseconds, as Go's ``time.RFC3339Nano`` writes ``created``."""
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    base = datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f".{nanos:09d}".rstrip("0").rstrip(".")
    return f"{base}{fraction}Z"


# ---------------------------------------------------------------- references

# distribution/reference regexp.go, anchored.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_NAME_PATH = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_NAME_TOTAL_MAX = 255
_ID_LIKE = re.compile(r"[a-f0-9]{64}")


class Reference(NamedTuple):
    """A normalised ``name:tag``: ``Reference("docker.io/library/busybox", "latest")``."""

    name: str
    tag: str

    def __str__(self) -> str:
        return f"{self.name}:{self.tag}"

    @property
    def familiar(self) -> str:
        """What ``docker images`` shows: ``busybox:latest``."""
        return f"{familiar_name(self.name)}:{self.tag}"


def parse_reference(text: str) -> Reference:
    """Normalise a tagged image reference as Docker does.

    ``busybox`` -> ``("docker.io/library/busybox", "latest")``; ``me/app:v1`` ->
    ``("docker.io/me/app", "v1")``; ``localhost:5000/app`` keeps its domain. The
    first path component is a domain when it contains ``.`` or ``:``, is
    ``localhost``, or has upper case letters (Docker's rule).

    Raises:
        ImageFormatError: malformed, upper case in the repository path, a bare
            64-hex id (Docker refuses those as names), or a digest reference
            (``name@sha256:...``), which corral cannot resolve yet.
    """
    if not isinstance(text, str) or not text:
        raise ImageFormatError("image reference must be a non-empty string")
    if "@" in text:
        raise ImageFormatError(f"invalid reference {text!r}: digest references are not supported")
    if _ID_LIKE.fullmatch(text):
        raise ImageFormatError(f"invalid reference {text!r}: cannot use a 64-hex image id as a name")
    name, tag = text, DEFAULT_TAG
    colon = text.rfind(":")
    if colon > text.rfind("/"):
        name, tag = text[:colon], text[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise ImageFormatError(f"invalid reference {text!r}: bad tag {tag!r}")
    domain, slash, path = name.partition("/")
    if not slash or (not any(c in domain for c in ".:") and domain != "localhost" and domain == domain.lower()):
        domain, path = DEFAULT_DOMAIN, name
    elif not _DOMAIN.fullmatch(domain):
        raise ImageFormatError(f"invalid reference {text!r}: bad registry domain {domain!r}")
    if domain == _LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = _OFFICIAL_PREFIX + path
    if path != path.lower():
        raise ImageFormatError(f"invalid reference {text!r}: repository name must be lowercase")
    if not _NAME_PATH.fullmatch(path):
        raise ImageFormatError(f"invalid reference {text!r}: bad repository name {path!r}")
    full = f"{domain}/{path}"
    if len(full) > _NAME_TOTAL_MAX:
        raise ImageFormatError(f"invalid reference {text!r}: name longer than {_NAME_TOTAL_MAX} characters")
    return Reference(full, tag)


def familiar_name(name: str) -> str:
    """``docker.io/library/busybox`` -> ``busybox``; ``docker.io/me/app`` -> ``me/app``."""
    if name.startswith(DEFAULT_DOMAIN + "/"):
        name = name[len(DEFAULT_DOMAIN) + 1:]
        if name.startswith(_OFFICIAL_PREFIX) and name.count("/") == 1:
            name = name[len(_OFFICIAL_PREFIX):]
    return name


# ---------------------------------------------------------------- documents


@dataclass(frozen=True)
class Descriptor:
    """What points at a blob: media type, digest, size (image-spec descriptor.md)."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    platform: dict[str, Any] | None = None
    urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class ContainerConfig:
    """The ``config`` object of an image config: how a container of it runs.

    ``None`` means absent (Docker writes ``null``), which differs from empty:
    an empty ``Entrypoint`` resets the parent's, a missing one inherits it.
    """

    user: str = ""
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    working_dir: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    stop_signal: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageConfig:
    """An image config (image-spec config.md); its digest is the image id."""

    architecture: str
    os: str
    diff_ids: tuple[str, ...]
    config: ContainerConfig = field(default_factory=ContainerConfig)
    created: str | None = None
    author: str = ""
    history: tuple[dict[str, Any], ...] = ()
    variant: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    """An image manifest: one config and its layers, bottom first."""

    config: Descriptor
    layers: tuple[Descriptor, ...]
    media_type: str = MEDIA_TYPE_OCI_MANIFEST
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Index:
    """An image index (manifest list): one manifest per platform."""

    manifests: tuple[Descriptor, ...]
    media_type: str = MEDIA_TYPE_OCI_INDEX
    annotations: dict[str, str] = field(default_factory=dict)


def encode_json(document: Any) -> bytes:
    """Canonical JSON: sorted keys, no spaces, UTF-8 (rule 2)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _decode(document: bytes | str | dict[str, Any], what: str) -> dict[str, Any]:
    if isinstance(document, dict):
        return document
    try:
        value = json.loads(document)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImageFormatError(f"{what}: not valid JSON: {exc}") from exc
    return _obj(value, what)


# -- config

_CONFIG_FIELDS = ("User", "Env", "Entrypoint", "Cmd", "WorkingDir", "Labels", "ExposedPorts", "Volumes", "StopSignal")
_IMAGE_FIELDS = ("architecture", "os", "rootfs", "config", "created", "author", "history", "variant")


def parse_image_config(document: bytes | str | dict[str, Any]) -> ImageConfig:
    """An image config document -> ``ImageConfig``.

    Raises:
        ImageFormatError: malformed; the message starts with the field's path.
    """
    doc = _decode(document, "config")
    rootfs = _obj(_required(doc, "rootfs", "rootfs"), "rootfs")
    if rootfs.get("type") != "layers":
        raise ImageFormatError(f"rootfs.type: must be 'layers', got {rootfs.get('type')!r}")
    diff_ids = tuple(_str_list(rootfs.get("diff_ids") or [], "rootfs.diff_ids"))
    for i, d in enumerate(diff_ids):
        _digest(d, f"rootfs.diff_ids[{i}]")
    raw_config = doc.get("config")
    return ImageConfig(
        architecture=_str(_required(doc, "architecture", "architecture"), "architecture"),
        os=_str(_required(doc, "os", "os"), "os"),
        diff_ids=diff_ids,
        config=_container_config(raw_config, "config") if raw_config is not None else ContainerConfig(),
        created=_str(doc["created"], "created") if doc.get("created") is not None else None,
        author=_str(doc.get("author") or "", "author"),
        history=tuple(_obj(h, f"history[{i}]") for i, h in enumerate(_list(doc.get("history") or [], "history"))),
        variant=_str(doc.get("variant") or "", "variant"),
        extra={k: v for k, v in doc.items() if k not in _IMAGE_FIELDS},
    )


def _container_config(value: Any, where: str) -> ContainerConfig:
    obj = _obj(value, where)

    def optional_list(key: str) -> tuple[str, ...] | None:
        raw = obj.get(key)
        return None if raw is None else tuple(_str_list(raw, f"{where}.{key}"))

    return ContainerConfig(
        user=_str(obj.get("User") or "", f"{where}.User"),
        env=tuple(_str_list(obj.get("Env") or [], f"{where}.Env")),
        entrypoint=optional_list("Entrypoint"),
        cmd=optional_list("Cmd"),
        working_dir=_str(obj.get("WorkingDir") or "", f"{where}.WorkingDir"),
        labels=_str_map(obj.get("Labels") or {}, f"{where}.Labels"),
        exposed_ports=tuple(sorted(_obj(obj.get("ExposedPorts") or {}, f"{where}.ExposedPorts"))),
        volumes=tuple(sorted(_obj(obj.get("Volumes") or {}, f"{where}.Volumes"))),
        stop_signal=_str(obj.get("StopSignal") or "", f"{where}.StopSignal"),
        extra={k: v for k, v in obj.items() if k not in _CONFIG_FIELDS},
    )


def image_config_document(config: ImageConfig) -> dict[str, Any]:
    """``ImageConfig`` -> its JSON document (absent values left out)."""
    c = config.config
    inner: dict[str, Any] = dict(c.extra)
    for key, value in (("User", c.user), ("Env", list(c.env)), ("WorkingDir", c.working_dir),
                       ("Labels", dict(c.labels)), ("StopSignal", c.stop_signal),
                       ("ExposedPorts", {p: {} for p in c.exposed_ports}),
                       ("Volumes", {v: {} for v in c.volumes})):
        if value:
            inner[key] = value
    if c.entrypoint is not None:
        inner["Entrypoint"] = list(c.entrypoint)
    if c.cmd is not None:
        inner["Cmd"] = list(c.cmd)
    doc: dict[str, Any] = dict(config.extra)
    doc.update(architecture=config.architecture, os=config.os, config=inner,
               rootfs={"type": "layers", "diff_ids": list(config.diff_ids)})
    if config.created is not None:
        doc["created"] = config.created
    if config.author:
        doc["author"] = config.author
    if config.variant:
        doc["variant"] = config.variant
    if config.history:
        doc["history"] = [dict(h) for h in config.history]
    return doc


def encode_image_config(config: ImageConfig) -> bytes:
    return encode_json(image_config_document(config))


# -- descriptors, manifests, indexes


def _descriptor(value: Any, where: str) -> Descriptor:
    obj = _obj(value, where)
    size = _required(obj, "size", f"{where}.size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ImageFormatError(f"{where}.size: must be a non-negative integer, got {size!r}")
    platform = obj.get("platform")
    return Descriptor(
        media_type=_str(_required(obj, "mediaType", f"{where}.mediaType"), f"{where}.mediaType"),
        digest=_digest(_required(obj, "digest", f"{where}.digest"), f"{where}.digest"),
        size=size,
        annotations=_str_map(obj.get("annotations") or {}, f"{where}.annotations"),
        platform=_obj(platform, f"{where}.platform") if platform is not None else None,
        urls=tuple(_str_list(obj.get("urls") or [], f"{where}.urls")),
    )


def descriptor_document(d: Descriptor) -> dict[str, Any]:
    doc: dict[str, Any] = {"mediaType": d.media_type, "digest": d.digest, "size": d.size}
    if d.annotations:
        doc["annotations"] = dict(d.annotations)
    if d.platform is not None:
        doc["platform"] = dict(d.platform)
    if d.urls:
        doc["urls"] = list(d.urls)
    return doc


def _schema_version(doc: dict[str, Any]) -> None:
    if doc.get("schemaVersion") != 2:
        raise ImageFormatError(f"schemaVersion: must be 2, got {doc.get('schemaVersion')!r}")


def parse_manifest(document: bytes | str | dict[str, Any]) -> Manifest:
    """An OCI or Docker schema 2 image manifest -> ``Manifest``.

    Raises:
        ImageFormatError: malformed, schema 1, or an index given where a manifest was expected.
    """
    doc = _decode(document, "manifest")
    _schema_version(doc)
    media_type = doc.get("mediaType") or MEDIA_TYPE_OCI_MANIFEST   # SPEC: optional in OCI
    if media_type not in MANIFEST_MEDIA_TYPES:
        raise ImageFormatError(f"mediaType: {media_type!r} is not an image manifest")
    return Manifest(
        config=_descriptor(_required(doc, "config", "config"), "config"),
        layers=tuple(_descriptor(v, f"layers[{i}]") for i, v in enumerate(_list(doc.get("layers") or [], "layers"))),
        media_type=media_type,
        annotations=_str_map(doc.get("annotations") or {}, "annotations"),
    )


def encode_manifest(manifest: Manifest) -> bytes:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": manifest.media_type,
        "config": descriptor_document(manifest.config),
        "layers": [descriptor_document(d) for d in manifest.layers],
    }
    if manifest.annotations:
        doc["annotations"] = dict(manifest.annotations)
    return encode_json(doc)


def parse_index(document: bytes | str | dict[str, Any]) -> Index:
    """An OCI image index or Docker manifest list -> ``Index``."""
    doc = _decode(document, "index")
    _schema_version(doc)
    media_type = doc.get("mediaType") or MEDIA_TYPE_OCI_INDEX
    if media_type not in INDEX_MEDIA_TYPES:
        raise ImageFormatError(f"mediaType: {media_type!r} is not an image index")
    return Index(
        manifests=tuple(_descriptor(v, f"manifests[{i}]")
                        for i, v in enumerate(_list(_required(doc, "manifests", "manifests"), "manifests"))),
        media_type=media_type,
        annotations=_str_map(doc.get("annotations") or {}, "annotations"),
    )


def encode_index(index: Index) -> bytes:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": index.media_type,
        "manifests": [descriptor_document(d) for d in index.manifests],
    }
    if index.annotations:
        doc["annotations"] = dict(index.annotations)
    return encode_json(doc)


# -- field checks

# Field checks raising ImageFormatError (shared with the other formats: _fields.py).
_required = partial(_fields.required, error=ImageFormatError)
_obj = partial(_fields.obj, error=ImageFormatError)
_list = partial(_fields.list_, error=ImageFormatError)
_str = partial(_fields.string, error=ImageFormatError)


def _str_list(value: Any, where: str) -> list[str]:
    return [_str(v, f"{where}[{i}]") for i, v in enumerate(_list(value, where))]


def _str_map(value: Any, where: str) -> dict[str, str]:
    return {k: _str(v, f"{where}.{k}") for k, v in _obj(value, where).items()}


def _digest(value: Any, where: str) -> str:
    try:
        parse_digest(value)
    except ImageFormatError as exc:
        raise ImageFormatError(f"{where}: {exc}") from None
    return value
