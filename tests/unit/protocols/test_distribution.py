"""protocols.distribution: names to registries, Docker's insecure rule, auth challenges,
platform choice and catalog search, all without a network."""

from __future__ import annotations

import pytest

from protocols.distribution import (
    DistributionError,
    RemoteRef,
    check_insecure_entries,
    is_insecure,
    next_link,
    parse_challenge,
    parse_remote,
    pick_platform,
    registry_root,
    repositories,
    search_catalog,
)
from protocols.oci_image import Descriptor, Index

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize("text, expected", [
    ("busybox", RemoteRef("docker.io/library/busybox", "latest", None)),
    ("me/app:v1", RemoteRef("docker.io/me/app", "v1", None)),
    (f"localhost:5000/app@{DIGEST}", RemoteRef("localhost:5000/app", None, DIGEST)),
    (f"host.example/app:1@{DIGEST}", RemoteRef("host.example/app", "1", DIGEST)),
])
def test_parse_remote(text: str, expected: RemoteRef) -> None:
    ref = parse_remote(text)
    assert ref == expected
    assert ref.reference == (expected.digest or expected.tag)


@pytest.mark.parametrize("text", ["", "team/UPPER", "app@sha256:short", "app@md5:" + "a" * 32])
def test_parse_remote_refuses(text: str) -> None:
    with pytest.raises(DistributionError):
        parse_remote(text)


def test_hub_names_go_to_mirrors_first_and_others_never() -> None:
    hub = repositories(parse_remote("busybox"), mirrors=("https://mirror.example", "http://localhost:5000"))
    assert [(r.host, r.name, r.secure) for r in hub] == [
        ("mirror.example", "library/busybox", True), ("localhost:5000", "library/busybox", False),
        ("registry-1.docker.io", "library/busybox", True)]
    assert hub[0].manifest_url("latest") == "https://mirror.example/v2/library/busybox/manifests/latest"
    own = repositories(parse_remote("host.example:5000/team/app:1"), mirrors=("https://mirror.example",))
    assert [(r.host, r.secure) for r in own] == [("host.example:5000", True)]
    assert own[0].upload_url(mount=DIGEST, from_name="other/app") == (
        f"https://host.example:5000/v2/team/app/blobs/uploads/?mount=sha256%3A{'a' * 64}&from=other%2Fapp")
    with pytest.raises(DistributionError, match="expected http"):
        repositories(parse_remote("busybox"), mirrors=("ftp://mirror",))


@pytest.mark.parametrize("host, insecure, expected", [
    ("localhost:5000", (), True), ("127.0.0.2:5000", (), True), ("[::1]:5000", (), True),
    ("reg.example:5000", (), False), ("reg.example:5000", ("reg.example:5000",), True),
    ("reg.example:443", ("reg.example",), True), ("10.1.2.3:5000", ("10.0.0.0/8",), True),
    ("11.1.2.3:5000", ("10.0.0.0/8",), False),
])
def test_insecure_is_dockers_rule(host: str, insecure: tuple[str, ...], expected: bool) -> None:
    assert is_insecure(host, insecure) is expected


def test_insecure_entries_are_checked() -> None:
    check_insecure_entries(("reg:5000", "10.0.0.0/8"))
    for bad in ("http://reg:5000", "10.0.0.0/99"):
        with pytest.raises(DistributionError):
            check_insecure_entries((bad,))
    assert registry_root("localhost:5000") == "http://localhost:5000/v2/"
    assert registry_root("docker.io") == "https://registry-1.docker.io/v2/"


def test_bearer_and_basic_challenges() -> None:
    c = parse_challenge('Bearer realm="https://auth.example/token",service="registry.example",'
                        'scope="repository:team/app:pull"')
    assert c.scheme == "bearer" and c.params["service"] == "registry.example"
    assert c.token_url("repository:team/app:pull,push") == (
        "https://auth.example/token?service=registry.example&scope=repository%3Ateam%2Fapp%3Apull%2Cpush")
    assert parse_challenge('Basic realm="x \\"y\\""').params == {"realm": 'x "y"'}
    with pytest.raises(DistributionError):
        parse_challenge("")
    with pytest.raises(DistributionError):
        parse_challenge("Bearer realm").token_url("s")


def _entry(arch: str, variant: str = "") -> Descriptor:
    platform = {"os": "linux", "architecture": arch, **({"variant": variant} if variant else {})}
    return Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:" + arch[0] * 64, 1, platform=platform)


def test_pick_platform() -> None:
    index = Index(manifests=(_entry("arm64", "v8"), _entry("amd64"), _entry("arm", "v7")))
    assert pick_platform(index, os="linux", architecture="amd64").platform["architecture"] == "amd64"
    assert pick_platform(index, os="linux", architecture="arm64").platform["variant"] == "v8"
    with pytest.raises(DistributionError, match="linux/amd64, linux/arm/v7, linux/arm64/v8"):
        pick_platform(index, os="linux", architecture="s390x")


def test_search_and_pagination() -> None:
    assert search_catalog(["web/front", "db/main", "Web/back"], "WEB") == ["Web/back", "web/front"]
    assert next_link('</v2/_catalog?last=b&n=2>; rel="next"') == "/v2/_catalog?last=b&n=2"
    assert next_link(None) is None
