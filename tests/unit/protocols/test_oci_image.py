"""OCI image documents, digests, chain ids and Docker's reference normalisation."""

from __future__ import annotations

import hashlib
import json

import pytest

from protocols.oci_image import (
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_LAYER_GZIP,
    ContainerConfig,
    Descriptor,
    ImageConfig,
    ImageFormatError,
    Index,
    Manifest,
    Reference,
    chain_ids,
    encode_image_config,
    encode_index,
    encode_manifest,
    familiar_name,
    format_timestamp,
    goarch,
    layer_compression,
    parse_digest,
    parse_image_config,
    parse_index,
    parse_manifest,
    parse_reference,
    sha256_digest,
)

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64
D3 = "sha256:" + "c" * 64


@pytest.mark.parametrize("text, expected", [
    ("busybox", ("docker.io/library/busybox", "latest")),
    ("busybox:latest", ("docker.io/library/busybox", "latest")),
    ("busybox:1.36.1-musl", ("docker.io/library/busybox", "1.36.1-musl")),
    ("library/busybox", ("docker.io/library/busybox", "latest")),
    ("docker.io/busybox", ("docker.io/library/busybox", "latest")),
    ("index.docker.io/busybox:1", ("docker.io/library/busybox", "1")),
    ("me/app:v1", ("docker.io/me/app", "v1")),
    ("me/team/app", ("docker.io/me/team/app", "latest")),
    ("localhost/app", ("localhost/app", "latest")),
    ("localhost:5000/app:dev", ("localhost:5000/app", "dev")),
    ("quay.io/org/app_x.y-z:T_1", ("quay.io/org/app_x.y-z", "T_1")),
    ("Registry.Example/app", ("Registry.Example/app", "latest")),   # upper case: a domain
    ("[::1]:5000/app", ("[::1]:5000/app", "latest")),
])
def test_references_normalise_as_docker_does(text: str, expected: tuple[str, str]) -> None:
    ref = parse_reference(text)
    assert ref == expected
    name, tag = ref   # a 2-tuple
    assert str(ref) == f"{name}:{tag}"


@pytest.mark.parametrize("text, message", [
    ("", "non-empty"),
    ("Busybox", "lowercase"),
    ("me/App", "lowercase"),
    ("busybox:", "bad tag"),
    ("busybox:" + "t" * 129, "bad tag"),
    ("busybox:-x", "bad tag"),
    ("bad_-name", "bad repository name"),
    ("a//b", "bad repository name"),
    ("0123456789abcdef" * 4, "64-hex"),
    ("busybox@sha256:" + "a" * 64, "digest references"),
    ("-bad.io/app", "bad registry domain"),
])
def test_bad_references_are_named(text: str, message: str) -> None:
    with pytest.raises(ImageFormatError, match=message):
        parse_reference(text)


@pytest.mark.parametrize("name, familiar", [
    ("docker.io/library/busybox", "busybox"),
    ("docker.io/me/app", "me/app"),
    ("docker.io/library/a/b", "library/a/b"),
    ("quay.io/org/app", "quay.io/org/app"),
])
def test_familiar_names(name: str, familiar: str) -> None:
    assert familiar_name(name) == familiar


def test_reference_familiar_form() -> None:
    assert Reference("docker.io/library/busybox", "1").familiar == "busybox:1"


def test_digests() -> None:
    assert sha256_digest(b"x") == "sha256:" + hashlib.sha256(b"x").hexdigest()
    assert parse_digest(D1) == ("sha256", "a" * 64)
    assert parse_digest("sha512:" + "0" * 128) == ("sha512", "0" * 128)


@pytest.mark.parametrize("digest", [
    "a" * 64, "sha256:" + "A" * 64, "sha256:" + "a" * 63, "md5:" + "a" * 32,
    "sha256:../../etc/passwd", "sha256:" + "a" * 64 + "/x", "",
])
def test_bad_digests_are_refused(digest: str) -> None:
    with pytest.raises(ImageFormatError):
        parse_digest(digest)


def test_chain_ids_follow_the_image_spec() -> None:
    assert chain_ids([]) == []
    assert chain_ids([D1]) == [D1]
    second = "sha256:" + hashlib.sha256(f"{D1} {D2}".encode()).hexdigest()
    third = "sha256:" + hashlib.sha256(f"{second} {D3}".encode()).hexdigest()
    assert chain_ids([D1, D2, D3]) == [D1, second, third]
    with pytest.raises(ImageFormatError):
        chain_ids([D1, "nope"])


def test_image_config_round_trip_keeps_unknown_fields() -> None:
    doc = {
        "architecture": "amd64", "os": "linux", "created": "2024-01-02T03:04:05.5Z",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "Entrypoint": [], "WorkingDir": "/w",
                   "User": "1:2", "Labels": {"a": "b"}, "ExposedPorts": {"80/tcp": {}},
                   "Volumes": {"/data": {}}, "StopSignal": "SIGTERM", "Healthcheck": {"Test": ["NONE"]}},
        "rootfs": {"type": "layers", "diff_ids": [D1, D2]},
        "history": [{"created_by": "x"}],
        "moby.buildkit.buildinfo.v1": "e30=",
    }
    config = parse_image_config(json.dumps(doc).encode())
    assert config.config == ContainerConfig(
        user="1:2", env=("PATH=/bin",), entrypoint=(), cmd=("sh",), working_dir="/w", labels={"a": "b"},
        exposed_ports=("80/tcp",), volumes=("/data",), stop_signal="SIGTERM",
        extra={"Healthcheck": {"Test": ["NONE"]}})
    assert config.diff_ids == (D1, D2)
    assert config.extra == {"moby.buildkit.buildinfo.v1": "e30="}
    assert json.loads(encode_image_config(config)) == doc
    assert parse_image_config(encode_image_config(config)) == config


def test_absent_cmd_differs_from_empty() -> None:
    base = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    assert parse_image_config({**base, "config": {"Cmd": None}}).config.cmd is None
    assert parse_image_config(base).config.cmd is None
    assert parse_image_config({**base, "config": {"Cmd": []}}).config.cmd == ()
    assert "Cmd" not in json.loads(encode_image_config(parse_image_config(base)))["config"]


def test_encoding_is_canonical() -> None:
    config = ImageConfig(architecture="amd64", os="linux", diff_ids=(D1,), config=ContainerConfig(cmd=("sh",)))
    encoded = encode_image_config(config)
    assert encoded == encode_image_config(parse_image_config(encoded))
    assert b" " not in encoded


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("rootfs"), "rootfs: required"),
    (lambda d: d["rootfs"].update(type="tar"), "rootfs.type"),
    (lambda d: d["rootfs"].update(diff_ids=["sha256:zz"]), r"rootfs.diff_ids\[0\]"),
    (lambda d: d.update(config={"Env": ["A=1", 2]}), r"config.Env\[1\]: must be a string"),
    (lambda d: d.update(config={"Labels": {"a": 1}}), "config.Labels.a"),
    (lambda d: d.pop("os"), "os: required"),
])
def test_config_errors_name_the_field(mutate, message: str) -> None:
    doc = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [D1]}}
    mutate(doc)
    with pytest.raises(ImageFormatError, match=message):
        parse_image_config(doc)


def test_not_json_is_an_error() -> None:
    with pytest.raises(ImageFormatError, match="not valid JSON"):
        parse_image_config(b"{")
    with pytest.raises(ImageFormatError, match="must be an object"):
        parse_manifest(b"[]")


def test_manifest_round_trip() -> None:
    manifest = Manifest(
        config=Descriptor(MEDIA_TYPE_OCI_CONFIG, D1, 123),
        layers=(Descriptor(MEDIA_TYPE_OCI_LAYER_GZIP, D2, 456, annotations={"k": "v"}),),
        annotations={"org.opencontainers.image.ref.name": "1"},
    )
    assert parse_manifest(encode_manifest(manifest)) == manifest


def test_docker_manifest_is_read_and_schema1_refused() -> None:
    doc = {"schemaVersion": 2, "mediaType": MEDIA_TYPE_DOCKER_MANIFEST,
           "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": D1, "size": 1},
           "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": D2, "size": 2}]}
    assert parse_manifest(doc).media_type == MEDIA_TYPE_DOCKER_MANIFEST
    with pytest.raises(ImageFormatError, match="schemaVersion"):
        parse_manifest({**doc, "schemaVersion": 1})
    with pytest.raises(ImageFormatError, match="not an image manifest"):
        parse_manifest({**doc, "mediaType": MEDIA_TYPE_DOCKER_MANIFEST_LIST})
    with pytest.raises(ImageFormatError, match=r"layers\[0\].size"):
        parse_manifest({**doc, "layers": [{"mediaType": "x", "digest": D2, "size": -1}]})


def test_index_round_trip() -> None:
    index = Index(manifests=(Descriptor(MEDIA_TYPE_DOCKER_MANIFEST, D1, 10,
                                        platform={"architecture": "amd64", "os": "linux"}),))
    assert parse_index(encode_index(index)) == index
    with pytest.raises(ImageFormatError, match="manifests: required"):
        parse_index({"schemaVersion": 2})


def test_layer_compression() -> None:
    assert layer_compression("application/vnd.oci.image.layer.v1.tar") == ""
    assert layer_compression("application/vnd.docker.image.rootfs.diff.tar.gzip") == "gzip"
    assert layer_compression("application/vnd.oci.image.layer.v1.tar+zstd") == "zstd"
    with pytest.raises(ImageFormatError, match="unsupported layer media type"):
        layer_compression("text/plain")


def test_timestamps_and_arch() -> None:
    assert format_timestamp(0) == "1970-01-01T00:00:00Z"
    assert format_timestamp(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"
    assert format_timestamp(1_700_000_000_500_000_000) == "2023-11-14T22:13:20.5Z"
    assert goarch("x86_64") == "amd64" and goarch("aarch64") == "arm64" and goarch("mips") == "mips"
