"""Pull and push over the OCI distribution protocol; blocking, run in worker threads.

The Engine calls ``pull``/``push``/``search``/``check_login`` through
``trio.to_thread.run_sync``; each call reports progress through a callback
(Docker's JSON-message shape: ``{"status", "id", "progressDetail"}``) that
the Engine forwards to the client. The protocol's pure rules (where a name
lives, challenges, platform choice) are ``protocols.distribution``; this
module only talks HTTP (httpx) and moves bytes into the content store.

Rules:

1. Nothing a registry sends is trusted: manifests are hashed and checked
   against the digest asked for (and ``Docker-Content-Digest``), capped at 4
   MiB; blobs stream into ``ContentStore.write_blob`` with their expected
   digest and size, so a wrong or truncated blob is never stored.
2. Work is skipped, not repeated: a blob the store has is not downloaded; a
   blob the registry has (HEAD) is not uploaded, and one another repository of
   the same registry holds (one of the image's other tags) is mounted.
3. Layers move concurrently (``LAYER_CONCURRENCY`` at a time), each on its own
   thread; the manifest goes last on push, so a registry never serves a
   manifest whose blobs are missing.
4. Credentials travel per call (the CLI keeps them, as docker's does); a 401
   is answered once, with a bearer token from the challenge's realm or with
   basic auth, and then the error is the registry's.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from protocols.distribution import (
    ACCEPT_MANIFESTS,
    MAX_MANIFEST,
    DistributionError,
    RemoteRef,
    Repository,
    next_link,
    parse_challenge,
    parse_remote,
    pick_platform,
    registry_root,
    repositories,
    scope,
    search_catalog,
)
from protocols.oci_image import (
    INDEX_MEDIA_TYPES,
    Descriptor,
    ImageFormatError,
    goarch,
    parse_image_config,
    parse_index,
    parse_manifest,
    parse_reference,
    sha256_digest,
)
from runtime.content import ContentError
from runtime.images import Image, ImageStore
from runtime.layers import LayerError

LAYER_CONCURRENCY = 3
TIMEOUT = httpx.Timeout(30.0, read=300.0)
PROGRESS_EVERY = 1 << 20          # bytes between two progress messages of one blob

Progress = Callable[[dict[str, Any]], None]


class RegistryError(Exception):
    """The registry refused, failed, or lied; the message says which and where."""


class Unreachable(RegistryError):
    """No answer at all (connection refused, DNS, TLS): a mirror is skipped for the next."""


class Unauthorized(RegistryError):
    pass


class NotFound(RegistryError):
    pass


@dataclass(frozen=True)
class Settings:
    """The daemon's registry options."""

    mirrors: tuple[str, ...] = ()
    insecure: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pulled:
    image: Image
    bytes: int               # blob bytes downloaded (0: everything was here already)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


class _Session:
    """One repository on one registry: an httpx client and the token its challenges gave."""

    def __init__(self, repo: Repository, credentials: Credentials | None, access: str) -> None:
        """``access``: the token scope to ask for (``repository:NAME:pull,push``; "" for none)."""
        self.repo = repo
        self._credentials = credentials
        self._scope = access
        self._authorization: str | None = None
        self._lock = threading.Lock()
        self.http = httpx.Client(timeout=TIMEOUT, verify=repo.secure, follow_redirects=True)

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request, answering a 401 once (rule 4); the body is read."""
        response = self._send(method, url, **kwargs)
        if response.status_code == 401 and self._authenticate(response):
            response = self._send(method, url, **kwargs)
        if response.status_code == 401:
            raise Unauthorized(f"{self.repo.host}: unauthorized: authentication required")
        return response

    def stream(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """A streaming GET, answering a 401 once; the caller closes the response."""
        for attempt in range(2):
            response = self.http.send(self.http.build_request(method, url, headers=self._headers(kwargs)),
                                      stream=True)
            if response.status_code != 401:
                return response
            response.read()
            response.close()
            if attempt or not self._authenticate(response):
                break
        raise Unauthorized(f"{self.repo.host}: unauthorized: authentication required")

    def _headers(self, kwargs: dict[str, Any]) -> dict[str, str]:
        headers = dict(kwargs.pop("headers", None) or {})
        if self._authorization is not None:
            headers["Authorization"] = self._authorization
        return headers

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = self._headers(kwargs)
        try:
            return self.http.request(method, url, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(f"{self.repo.host}: {exc}") from None

    def _authenticate(self, response: httpx.Response) -> bool:
        header = response.headers.get("WWW-Authenticate")
        if not header:
            return False
        try:
            challenge = parse_challenge(header)
        except DistributionError as exc:
            raise RegistryError(f"{self.repo.host}: {exc}") from None
        with self._lock:
            if challenge.scheme == "basic":
                if self._credentials is None:
                    return False
                self._authorization = _basic(self._credentials)
                return True
            if challenge.scheme != "bearer":
                raise RegistryError(f"{self.repo.host}: unsupported auth scheme {challenge.scheme!r}")
            try:
                token_url = challenge.token_url(self._scope)
                auth = (self._credentials.username, self._credentials.password) if self._credentials else None
                answer = self.http.get(token_url, auth=auth)
            except (DistributionError, httpx.TransportError) as exc:
                raise RegistryError(f"{self.repo.host}: token service: {exc}") from None
            if answer.status_code != 200:
                raise Unauthorized(f"{self.repo.host}: token service answered {answer.status_code}")
            try:
                doc = answer.json()
                token = doc.get("token") or doc.get("access_token")
            except ValueError:
                token = None
            if not isinstance(token, str) or not token:
                raise RegistryError(f"{self.repo.host}: token service answered without a token")
            self._authorization = f"Bearer {token}"
            return True


def _basic(c: Credentials) -> str:
    return "Basic " + base64.b64encode(f"{c.username}:{c.password}".encode()).decode()


def _fail(response: httpx.Response, what: str) -> RegistryError:
    """The registry's own error message when it sent one (distribution's {"errors": [...]})."""
    detail = ""
    try:
        errors = response.json().get("errors") or []
        detail = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors)
    except (ValueError, AttributeError):
        pass
    kind = NotFound if response.status_code == 404 else RegistryError
    return kind(f"{what}: {response.status_code} {response.reason_phrase}" + (f" ({detail})" if detail else ""))


# ---------------------------------------------------------------- pull


def pull(store: ImageStore, text: str, settings: Settings, progress: Progress,
         credentials: Credentials | None = None) -> Pulled:
    """``docker pull``: the image named by ``text`` (tag or digest) into ``store``.

    Mirrors come first for Docker Hub names; one that cannot be reached or does not
    have the image is skipped for the next.

    Raises:
        DistributionError: a malformed name. RegistryError: what the last registry said.
    """
    ref = parse_remote(text)
    last: RegistryError | None = None
    for repo in repositories(ref, mirrors=settings.mirrors, insecure=settings.insecure):
        session = _Session(repo, credentials, scope(repo.name, "pull"))
        try:
            return _pull_from(store, session, ref, progress)
        except (Unreachable, NotFound) as exc:
            last = exc
        finally:
            session.close()
    assert last is not None
    raise last


def _get_manifest(session: _Session, reference: str, expected: str | None) -> tuple[bytes, str, str]:
    """(body, digest, media type) of ``/manifests/<reference>``, checked (rule 1)."""
    url = session.repo.manifest_url(reference)
    response = session.request("GET", url, headers={"Accept": ACCEPT_MANIFESTS})
    if response.status_code != 200:
        raise _fail(response, f"manifest {session.repo.name}:{reference}")
    body = response.content
    if len(body) > MAX_MANIFEST:
        raise RegistryError(f"manifest {reference}: {len(body)} bytes, more than {MAX_MANIFEST}")
    digest = sha256_digest(body)
    for claimed in (expected, response.headers.get("Docker-Content-Digest")):
        if claimed and claimed.startswith("sha256:") and claimed != digest:
            raise RegistryError(f"manifest {reference}: content has digest {digest}, expected {claimed}")
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
    try:
        media_type = json.loads(body).get("mediaType") or media_type
    except (ValueError, AttributeError):
        raise RegistryError(f"manifest {reference}: not JSON") from None
    return body, digest, media_type


def _pull_from(store: ImageStore, session: _Session, ref: RemoteRef, progress: Progress) -> Pulled:
    body, digest, media_type = _get_manifest(session, ref.reference, ref.digest)
    try:
        if media_type in INDEX_MEDIA_TYPES:
            chosen = pick_platform(parse_index(body), os="linux", architecture=goarch(os.uname().machine))
            body, digest, media_type = _get_manifest(session, chosen.digest, chosen.digest)
        manifest = parse_manifest(body)
    except (ImageFormatError, DistributionError) as exc:
        raise RegistryError(f"manifest of {ref}: {exc}") from None
    progress({"status": f"Pulling from {familiar(ref.name)}", "id": ref.tag or ref.digest})
    config_bytes = _fetch_blob(store, session, manifest.config, progress, quiet=True)
    try:
        config = parse_image_config(store.content.read_blob(manifest.config.digest))
    except ImageFormatError as exc:
        raise RegistryError(f"config of {ref}: {exc}") from None
    if len(config.diff_ids) != len(manifest.layers):
        raise RegistryError(f"{ref}: {len(manifest.layers)} layers but the config names {len(config.diff_ids)}")
    with concurrent.futures.ThreadPoolExecutor(LAYER_CONCURRENCY, thread_name_prefix="pull") as pool:
        fetched = [f.result() for f in [pool.submit(_fetch_blob, store, session, layer, progress)
                                        for layer in manifest.layers]]
    store.content.write_blob(body, expected_digest=digest)
    tags = [f"{ref.name}:{ref.tag}"] if ref.tag is not None else []
    try:
        with store.index.transaction() as records:
            image = store.register(records, manifest.config.digest, digest,
                                   list(zip(manifest.layers, config.diff_ids)), tags)
    except LayerError as exc:
        raise RegistryError(f"{ref}: a layer could not be unpacked: {exc}") from None
    store.add_repo_digest(image.id, ref.name, digest)
    progress({"status": f"Digest: {digest}"})
    what = "Downloaded newer image" if any(n is not None for n in fetched) else "Image is up to date"
    progress({"status": f"Status: {what} for {familiar(ref.name)}{':' + ref.tag if ref.tag else '@' + digest}"})
    return Pulled(image, sum(n or 0 for n in (config_bytes, *fetched)))


def _fetch_blob(store: ImageStore, session: _Session, d: Descriptor, progress: Progress, *,
                quiet: bool = False) -> int | None:
    """Download ``d`` into the store unless it is there (rule 2): its size, or None when it was there."""
    short = d.digest.partition(":")[2][:12]
    if store.content.has(d.digest):
        if not quiet:
            progress({"status": "Already exists", "id": short})
        return None
    if not quiet:
        progress({"status": "Pulling fs layer", "id": short})
    response = session.stream("GET", session.repo.blob_url(d.digest))
    try:
        if response.status_code != 200:
            response.read()
            raise _fail(response, f"blob {d.digest}")
        store.content.write_blob(_counted(response.iter_bytes(1 << 20), d, short, progress, quiet),
                                 expected_digest=d.digest, expected_size=d.size)
    except ContentError as exc:
        raise RegistryError(f"blob {d.digest}: {exc}") from None
    except httpx.TransportError as exc:
        raise RegistryError(f"blob {d.digest}: {exc}") from None
    finally:
        response.close()
    if not quiet:
        progress({"status": "Pull complete", "id": short})
    return d.size


def _counted(chunks: Iterator[bytes], d: Descriptor, short: str, progress: Progress, quiet: bool) -> Iterator[bytes]:
    done, reported = 0, 0
    for chunk in chunks:
        done += len(chunk)
        if not quiet and done - reported >= PROGRESS_EVERY:
            reported = done
            progress({"status": "Downloading", "id": short, "progressDetail": {"current": done, "total": d.size}})
        yield chunk


def familiar(name: str) -> str:
    return parse_reference(f"{name}:latest").familiar.rpartition(":")[0]


# ---------------------------------------------------------------- push


def push(store: ImageStore, text: str, settings: Settings, progress: Progress,
         credentials: Credentials | None = None) -> str:
    """``docker push NAME[:TAG]``: the image's blobs, then its manifest; the manifest digest.

    Raises:
        DistributionError: a malformed name, or a digest given. ImageNotFound: no such tag here.
        RegistryError: the registry refused.
    """
    ref = parse_remote(text)
    if ref.digest is not None:
        raise DistributionError(f"push {text}: push a tag, not a digest")
    tag = f"{ref.name}:{ref.tag}"
    image = store.get(tag)
    (repo,) = repositories(ref, insecure=settings.insecure)[-1:]
    session = _Session(repo, credentials, scope(repo.name, "pull", "push"))
    try:
        body = store.content.read_blob(image.manifest_digest)
        manifest = parse_manifest(body)
        siblings = [parse_reference(t).name for t in image.repo_tags]
        siblings = [n.partition("/")[2] for n in siblings if n.partition("/")[0] == ref.domain and n != ref.name]
        progress({"status": f"The push refers to repository [{ref.name}]"})
        with concurrent.futures.ThreadPoolExecutor(LAYER_CONCURRENCY, thread_name_prefix="push") as pool:
            futures = [pool.submit(_push_blob, store, session, layer, siblings, progress) for layer in manifest.layers]
            for future in futures:
                future.result()
        _push_blob(store, session, manifest.config, siblings, progress, quiet=True)
        response = session.request("PUT", repo.manifest_url(ref.tag or "latest"), content=body,
                                   headers={"Content-Type": manifest.media_type})
        if response.status_code not in (200, 201):
            raise _fail(response, f"manifest {ref}")
        digest = sha256_digest(body)
        store.add_repo_digest(image.id, ref.name, digest)
        progress({"status": f"{ref.tag}: digest: {digest} size: {len(body)}"})
        return digest
    finally:
        session.close()


def _push_blob(store: ImageStore, session: _Session, d: Descriptor, siblings: list[str], progress: Progress, *,
               quiet: bool = False) -> None:
    short = d.digest.partition(":")[2][:12]
    repo = session.repo
    head = session.request("HEAD", repo.blob_url(d.digest))
    if head.status_code == 200:
        if not quiet:
            progress({"status": "Layer already exists", "id": short})
        return
    for other in siblings:          # rule 2: cross-repository mount
        mounted = session.request("POST", repo.upload_url(mount=d.digest, from_name=other))
        if mounted.status_code == 201:
            if not quiet:
                progress({"status": f"Mounted from {other}", "id": short})
            return
    if not quiet:
        progress({"status": "Preparing", "id": short})
    start = session.request("POST", repo.upload_url())
    if start.status_code != 202 or not start.headers.get("Location"):
        raise _fail(start, f"blob upload of {d.digest}")
    location = httpx.URL(repo.root).join(start.headers["Location"])
    location = location.copy_merge_params({"digest": d.digest})
    with store.content.open_blob(d.digest) as f:
        done = session.request("PUT", str(location), content=_read_chunks(f, d, short, progress, quiet),
                               headers={"Content-Type": "application/octet-stream",
                                        "Content-Length": str(d.size)})
    if done.status_code not in (201, 204):
        raise _fail(done, f"blob upload of {d.digest}")
    if not quiet:
        progress({"status": "Pushed", "id": short})


def _read_chunks(f, d: Descriptor, short: str, progress: Progress, quiet: bool) -> Iterator[bytes]:
    sent, reported = 0, 0
    while chunk := f.read(1 << 20):
        sent += len(chunk)
        if not quiet and sent - reported >= PROGRESS_EVERY:
            reported = sent
            progress({"status": "Pushing", "id": short, "progressDetail": {"current": sent, "total": d.size}})
        yield chunk


# ---------------------------------------------------------------- search, login


def _server_session(server: str, settings: Settings, credentials: Credentials | None, access: str) -> _Session:
    """A session with a registry as a whole (``/v2/``, the catalog), not one of its repositories."""
    root = registry_root(server, insecure=settings.insecure)
    return _Session(Repository(root.split("://", 1)[1].split("/", 1)[0], "", root.startswith("https")),
                    credentials, access)


def search(term: str, registry: str, settings: Settings, credentials: Credentials | None = None,
           limit: int = 25) -> list[dict[str, Any]]:
    """``docker search`` through the registry's ``/v2/_catalog``: repositories whose name contains ``term``."""
    session = _server_session(registry, settings, credentials, "registry:catalog:*")
    root = session.repo.root
    names: list[str] = []
    url: str | None = f"{root}_catalog?n=1000"
    try:
        while url is not None and len(names) < 100_000:
            response = session.request("GET", url)
            if response.status_code != 200:
                raise _fail(response, f"{registry}: catalog")
            try:
                names.extend(str(n) for n in response.json().get("repositories") or [])
            except (ValueError, AttributeError):
                raise RegistryError(f"{registry}: catalog: not JSON") from None
            link = next_link(response.headers.get("Link"))
            url = str(httpx.URL(root).join(link)) if link else None
    finally:
        session.close()
    return [{"name": n, "description": "", "star_count": 0, "is_official": False, "is_automated": False}
            for n in search_catalog(names, term)[:limit]]


def check_login(server: str, settings: Settings, credentials: Credentials) -> None:
    """``docker login``: the registry's ``/v2/`` accepts these credentials.

    Raises:
        Unauthorized: it does not. RegistryError: it cannot be asked.
    """
    session = _server_session(server, settings, credentials, "")
    try:
        response = session.request("GET", session.repo.root)
        if response.status_code != 200:
            raise _fail(response, f"login to {server}")
    finally:
        session.close()
