"""The OCI distribution protocol's pure parts: where a reference lives, how to ask for
it, what a registry's auth challenge says, and which manifest of an index to take.

No sockets here (supervisor/registry.py does the HTTP); every rule that decides
a URL, a header or a choice is a function of its inputs, tested without a
network.

Docker's rules, kept because users rely on them:

- ``docker.io`` names are served by ``registry-1.docker.io``; a
  ``--registry-mirror`` is tried first for them (and only for them).
- Plain HTTP (or a certificate nobody verified) is allowed only for a registry
  named by ``--insecure-registry`` (host[:port] or a CIDR), and always for
  localhost and 127.0.0.0/8, as Docker treats them.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from .oci_image import (
    DEFAULT_DOMAIN,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    Descriptor,
    ImageFormatError,
    Index,
    parse_digest,
    parse_reference,
)

DOCKER_HUB_HOST = "registry-1.docker.io"
# Every manifest kind we can use, index kinds first (a multi-platform tag answers with one).
ACCEPT_MANIFESTS = ", ".join((MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_MANIFEST_LIST,
                              MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST))
MAX_MANIFEST = 4 << 20           # the distribution spec's recommended limit for a manifest


class DistributionError(ValueError):
    """A registry answer or a setting that does not make sense; the message says which."""


@dataclass(frozen=True)
class Repository:
    """Where a reference's blobs and manifests are: ``https://host/v2/name/...``."""

    host: str            # host[:port] as contacted
    name: str            # the repository path on that registry (library/busybox)
    secure: bool         # https with verified certificates

    @property
    def base(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.host}/v2/{self.name}"

    def manifest_url(self, reference: str) -> str:
        return f"{self.base}/manifests/{quote(reference, safe=':')}"

    def blob_url(self, digest: str) -> str:
        return f"{self.base}/blobs/{digest}"

    def upload_url(self, *, mount: str | None = None, from_name: str | None = None) -> str:
        query = f"?{urlencode({'mount': mount, 'from': from_name})}" if mount and from_name else ""
        return f"{self.base}/blobs/uploads/{query}"

    @property
    def root(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.host}/v2/"


@dataclass(frozen=True)
class RemoteRef:
    """What ``pull``/``push`` name: ``docker.io/library/busybox`` plus a tag, a digest, or both."""

    name: str                # normalised, with its domain
    tag: str | None
    digest: str | None

    @property
    def domain(self) -> str:
        return self.name.partition("/")[0]

    @property
    def path(self) -> str:
        return self.name.partition("/")[2]

    @property
    def reference(self) -> str:
        """What goes in ``/manifests/<reference>``: the digest when there is one."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        return f"{self.name}:{self.tag}" if self.digest is None else f"{self.name}@{self.digest}"


def parse_remote(text: str) -> RemoteRef:
    """``busybox``, ``busybox:1.36``, ``host:5000/app@sha256:...`` -> ``RemoteRef``.

    Raises:
        DistributionError: malformed (the message says what).
    """
    name, at, digest = text.partition("@")
    try:
        ref = parse_reference(name)
        if at:
            parse_digest(digest)
    except (ImageFormatError, ValueError) as exc:
        raise DistributionError(str(exc)) from None
    tagged = name.rfind(":") > name.rfind("/")
    return RemoteRef(ref.name, ref.tag if (tagged or not at) else None, digest if at else None)


def repositories(ref: RemoteRef, *, mirrors: tuple[str, ...] = (),
                 insecure: tuple[str, ...] = ()) -> list[Repository]:
    """Where to look for ``ref``, in order: mirrors first for Docker Hub names, then its home.

    Args:
        mirrors: ``--registry-mirror`` URLs (``https://mirror.example:5000`` or ``http://...``;
            ``http`` only when that host is also insecure).
        insecure: ``--insecure-registry`` entries (``host[:port]`` or a CIDR).

    Raises:
        DistributionError: a malformed mirror URL.
    """
    out = []
    if ref.domain == DEFAULT_DOMAIN:
        for mirror in mirrors:
            scheme, host = _split_url(mirror)
            secure = scheme == "https" and not is_insecure(host, insecure)
            out.append(Repository(host, ref.path, secure))
    host = DOCKER_HUB_HOST if ref.domain == DEFAULT_DOMAIN else ref.domain
    out.append(Repository(host, ref.path, not is_insecure(host, insecure)))
    return out


def registry_root(server: str, *, insecure: tuple[str, ...] = ()) -> str:
    """``https://host/v2/`` (or http for an insecure one) of a server named on ``login``."""
    host = server.split("://", 1)[-1].rstrip("/")
    if host in ("docker.io", "index.docker.io"):
        host = DOCKER_HUB_HOST
    return f"{'http' if is_insecure(host, insecure) else 'https'}://{host}/v2/"


def _split_url(url: str) -> tuple[str, str]:
    m = re.fullmatch(r"(https?)://([^/]+)/?", url.strip())
    if m is None:
        raise DistributionError(f"registry mirror {url!r}: expected http(s)://host[:port]")
    return m.group(1), m.group(2)


def is_insecure(host: str, insecure: tuple[str, ...] = ()) -> bool:
    """Docker's rule: localhost and 127.0.0.0/8 always, else only what ``--insecure-registry`` names."""
    hostname = _hostname(host)
    if hostname == "localhost":
        return True
    address = _address(hostname)
    if address is not None and address.is_loopback:
        return True
    for entry in insecure:
        if entry == host or entry == hostname:
            return True
        if "/" in entry and address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False


def check_insecure_entries(entries: tuple[str, ...]) -> None:
    """Raises DistributionError for an ``--insecure-registry`` that is neither host[:port] nor a CIDR."""
    for entry in entries:
        if "://" in entry:
            raise DistributionError(f"insecure registry {entry!r}: give host[:port] or a CIDR, without a scheme")
        if "/" in entry:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise DistributionError(f"insecure registry {entry!r}: {exc}") from None


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host[1:host.index("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _address(hostname: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(hostname)
    except ValueError:
        return None


# ---------------------------------------------------------------- auth


@dataclass(frozen=True)
class Challenge:
    """A ``WWW-Authenticate`` header: ``Bearer realm=...,service=...,scope=...`` or ``Basic realm=...``."""

    scheme: str                      # "bearer" or "basic", lower case
    params: dict[str, str]

    def token_url(self, scope: str) -> str:
        """Where to get a bearer token for ``scope`` (``repository:library/busybox:pull``)."""
        realm = self.params.get("realm")
        if not realm:
            raise DistributionError("bearer challenge without a realm")
        query = {k: v for k, v in (("service", self.params.get("service")), ("scope", scope)) if v}
        return f"{realm}{'&' if '?' in realm else '?'}{urlencode(query)}"


_PARAM = re.compile(r'\s*([A-Za-z][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


def parse_challenge(header: str) -> Challenge:
    """Parse one ``WWW-Authenticate`` value (RFC 7235 auth-params, quoted or not).

    Raises:
        DistributionError: empty, or an auth-param we cannot read.
    """
    scheme, _, rest = header.strip().partition(" ")
    if not scheme:
        raise DistributionError("empty WWW-Authenticate header")
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if m is None or m.end() == pos:
            raise DistributionError(f"WWW-Authenticate: cannot parse {rest[pos:]!r}")
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
        pos = m.end()
    return Challenge(scheme.lower(), params)


def scope(repository: str, *actions: str) -> str:
    return f"repository:{repository}:{','.join(actions)}"


# ---------------------------------------------------------------- manifests


def pick_platform(index: Index, *, os: str, architecture: str, variant: str = "") -> Descriptor:
    """The index's manifest for ``os/architecture[/variant]`` (a missing variant matches any).

    Raises:
        DistributionError: no entry for that platform (the message lists what there is).
    """
    fallback = None
    for d in index.manifests:
        p = d.platform or {}
        if p.get("os") != os or p.get("architecture") != architecture:
            continue
        if not variant or p.get("variant", "") == variant:
            return d
        fallback = fallback or d
    if fallback is not None:
        return fallback
    there = sorted({"/".join(x for x in ((d.platform or {}).get("os", "?"), (d.platform or {}).get("architecture", "?"),
                                         (d.platform or {}).get("variant", "")) if x) for d in index.manifests})
    raise DistributionError(f"no image for {os}/{architecture} in the index (it has {', '.join(there) or 'none'})")


def search_catalog(repositories_: list[str], term: str) -> list[str]:
    """``docker search`` over a registry's ``/v2/_catalog``: names containing ``term``."""
    term = term.lower()
    return sorted(r for r in repositories_ if term in r.lower())


def next_link(header: str | None) -> str | None:
    """The ``rel="next"`` target of a ``Link`` header (catalog and tags pagination)."""
    if not header:
        return None
    m = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', header)
    return m.group(1) if m else None
