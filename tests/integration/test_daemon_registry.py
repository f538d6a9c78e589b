"""pull, push, search, login/logout against a real registry (Debian's docker-registry),
started by the tests on 127.0.0.1 with its storage in tmp_path; skopeo (Debian's)
checks what we pushed and pushes what we pull.

localhost registries are reached over plain HTTP, as Docker reaches them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ._daemon import Daemon, daemon_fixture  # noqa: F401 - the `daemon` fixture
from ._metrics import free_port
from .conftest import corral_command, wait_for

pytestmark = pytest.mark.root


class Registry:
    def __init__(self, tmp: Path, *, htpasswd: Path | None = None, auth: str = "") -> None:
        self.port = free_port()
        self.host = f"localhost:{self.port}"
        self.dir = tmp / f"registry-{self.port}"
        self.dir.mkdir()
        if htpasswd is not None:
            auth = f"auth:\n  htpasswd:\n    realm: corral-test\n    path: {htpasswd}\n"
        (self.dir / "config.yml").write_text(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {self.dir / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n" + auth)
        exe = shutil.which("docker-registry")
        if exe is None:
            pytest.skip("needs docker-registry (Debian package docker-registry; make setup installs it)")
        self.log = self.dir / "log"
        with open(self.log, "w") as out:
            self.process = subprocess.Popen([exe, "serve", str(self.dir / "config.yml")], stdin=subprocess.DEVNULL,
                                            stdout=out, stderr=subprocess.STDOUT)
        wait_for(lambda: self._answers() or self.process.poll() is not None, timeout=30, what="the registry")
        assert self.process.poll() is None, self.log.read_text()

    def _answers(self) -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/", timeout=2).close()
        except urllib.error.HTTPError as exc:
            exc.close()
            return True                     # 401 with auth: it answers
        except OSError:
            return False
        return True

    def close(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture(name="registry")
def registry_fixture(tmp_path: Path):
    r = Registry(tmp_path)
    try:
        yield r
    finally:
        r.close()


def skopeo(*args: str) -> str:
    exe = shutil.which("skopeo")
    if exe is None:
        pytest.skip("needs skopeo (Debian package skopeo; make setup installs it)")
    done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout


def image_id(d: Daemon, ref: str) -> str:
    return json.loads(d.ok("image", "inspect", ref))[0]["Id"]


def test_push_then_pull_by_tag_and_digest(daemon: Daemon, registry: Registry) -> None:
    d = daemon
    team, other = f"{registry.host}/team/bb:1", f"{registry.host}/other/bb:2"
    d.ok("tag", "busybox", team)
    d.ok("tag", "busybox", other)
    out = d.ok("push", team)
    assert "Pushed" in out and "1: digest: sha256:" in out
    digest = out.strip().splitlines()[-1].split("digest: ")[1].split()[0]
    # skopeo reads what we pushed: the same layers our image has.
    info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{team}"))
    assert info["Digest"] == digest
    assert info["Layers"] == json.loads(d.ok("image", "inspect", "busybox"))[0]["RootFS"]["Layers"]
    # The second repository mounts the blob from the first; a second push uploads nothing.
    assert "Mounted from team/bb" in d.ok("push", other)
    assert "Layer already exists" in d.ok("push", other)
    original = image_id(d, "busybox")
    d.ok("rmi", "-f", original)
    out = d.ok("pull", team)
    assert "Pull complete" in out and f"Digest: {digest}" in out and "Downloaded newer image" in out
    assert image_id(d, team) == original
    assert json.loads(d.ok("image", "inspect", team))[0]["RepoDigests"] == [f"{registry.host}/team/bb@{digest}"]
    assert digest in d.ok("images", "--digests")
    assert "Image is up to date" in d.ok("pull", team)
    assert d.ok("run", "--rm", team, "echo", "pulled").strip() == "pulled"
    # By digest: the same image, and no tag is made for it.
    d.ok("rmi", "-f", original)
    d.ok("pull", f"{registry.host}/team/bb@{digest}")
    assert [i["RepoTags"] for i in d.json_lines("images")] == [[]]
    assert d.ok("run", "--rm", original, "echo", "by-digest").strip() == "by-digest"
    assert d.ok("run", "--rm", f"{registry.host}/team/bb@{digest}", "echo", "by-name@digest").strip() == (
        "by-name@digest")
    events = [(e["action"], e["attributes"].get("name")) for e in d.events("--filter", "type=image")]
    assert ("push", team) in events and ("pull", team) in events


def test_index_picks_this_platform_and_skopeo_pushes_what_we_pull(daemon: Daemon, registry: Registry,
                                                                     tmp_path: Path) -> None:
    d = daemon
    # skopeo pushes our saved image (so this pull is of a manifest we did not write) ...
    archive = tmp_path / "bb.tar"
    d.ok("save", "-o", str(archive), "busybox")
    skopeo("copy", "--dest-tls-verify=false", f"docker-archive:{archive}", f"docker://{registry.host}/sk/bb:1")
    # ... and an index naming it for amd64 beside a foreign platform, pushed by hand.
    manifest = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/sk/bb:1").encode()
    media_type = json.loads(manifest)["mediaType"]
    real = {"mediaType": media_type, "size": len(manifest), "digest": "sha256:" + hashlib.sha256(manifest).hexdigest(),
            "platform": {"os": "linux", "architecture": _goarch()}}
    foreign = {**real, "platform": {"os": "linux", "architecture": "s390x"}}
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": [foreign, real]}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{registry.port}/v2/sk/bb/manifests/multi", data=index,
                                     method="PUT", headers={"Content-Type": "application/vnd.oci.image.index.v1+json"})
    urllib.request.urlopen(request, timeout=30).close()
    d.ok("pull", f"{registry.host}/sk/bb:multi")
    assert image_id(d, f"{registry.host}/sk/bb:multi") == image_id(d, "busybox")
    assert d.ok("run", "--rm", f"{registry.host}/sk/bb:multi", "echo", "multi").strip() == "multi"


def _goarch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


def test_errors_are_clear_and_change_nothing(daemon: Daemon, registry: Registry) -> None:
    d = daemon
    images = d.json_lines("images")
    out = d.cli("pull", f"{registry.host}/nobody/here:1")
    assert out.returncode != 0 and "manifest unknown" in out.stderr.lower()
    out = d.cli("pull", f"127.0.0.1:{free_port()}/nothing/listens:1")
    assert out.returncode != 0 and "127.0.0.1" in out.stderr
    out = d.cli("pull", "Not/A/Valid:Name")
    assert out.returncode != 0
    out = d.cli("push", f"{registry.host}/not/tagged-here:1")
    assert out.returncode != 0 and "no such image" in out.stderr.lower()
    assert d.json_lines("images") == images


def test_search_lists_the_catalog(daemon: Daemon, registry: Registry) -> None:
    d = daemon
    for repo in ("web/front", "web/back", "db/main"):
        d.ok("tag", "busybox", f"{registry.host}/{repo}:1")
        d.ok("push", f"{registry.host}/{repo}:1")
    names = [r["name"] for r in d.json_lines("search", f"{registry.host}/web")]
    assert names == ["web/back", "web/front"]
    assert "db/main" in d.ok("search", f"{registry.host}/main")


def test_login_logout_with_basic_auth(daemon: Daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    htpasswd = shutil.which("htpasswd")
    if htpasswd is None:
        pytest.skip("needs htpasswd (Debian package apache2-utils; make setup installs it)")
    users = tmp_path / "htpasswd"
    subprocess.run([htpasswd, "-Bbc", str(users), "alice", "s3cret"], check=True, capture_output=True, timeout=30)
    registry = Registry(tmp_path, htpasswd=users)
    config = tmp_path / "client-config"
    monkeypatch.setenv("CORRAL_CONFIG", str(config))      # the CLI's credentials file
    d = daemon
    try:
        ref = f"{registry.host}/private/bb:1"
        d.ok("tag", "busybox", ref)
        out = d.cli("push", ref)
        assert out.returncode != 0 and "authentication required" in out.stderr
        out = d.cli("login", "-u", "alice", "-p", "wrong", registry.host)
        assert out.returncode != 0 and not (config / "auth.json").exists()
        assert d.ok("login", "-u", "alice", "-p", "s3cret", registry.host).strip() == "Login Succeeded"
        assert (config / "auth.json").stat().st_mode & 0o777 == 0o600
        assert "Pushed" in d.ok("push", ref)
        d.ok("rmi", ref)
        d.ok("pull", ref)
        assert d.ok("logout", registry.host).strip() == f"Removing login credentials for {registry.host}"
        out = d.cli("pull", ref)
        assert out.returncode != 0 and "authentication required" in out.stderr
    finally:
        registry.close()


def test_registry_mirror_serves_docker_hub_names(tmp_path: Path, cgroup_parent: str, registry: Registry) -> None:
    # There is no Docker Hub here: a pull of a Hub name can only succeed through the mirror.
    d = Daemon(tmp_path, cgroup_parent, "--registry-mirror", f"http://{registry.host}")
    d.start()
    try:
        d.ok("image", "bootstrap", "busybox")
        d.ok("tag", "busybox", f"{registry.host}/library/busybox:mirrored")
        d.ok("push", f"{registry.host}/library/busybox:mirrored")
        expected = image_id(d, "busybox")
        d.ok("rmi", "-f", expected)
        assert "Downloaded newer image for busybox:mirrored" in d.ok("pull", "busybox:mirrored")
        assert image_id(d, "busybox:mirrored") == expected
    finally:
        d.close()


def test_bad_registry_options_stop_the_daemon(tmp_path: Path, cgroup_parent: str) -> None:
    for flag, value, message in (("--registry-mirror", "ftp://x", "expected http(s)://host[:port]"),
                                 ("--insecure-registry", "http://x:5000", "without a scheme"),
                                 ("--insecure-registry", "10.0.0.0/99", "10.0.0.0/99")):
        argv = [*corral_command(), "daemon", "--data-root", str(tmp_path / "data"), "--exec-root",
                str(tmp_path / "run"), "--cgroup-parent", cgroup_parent, "--metrics-addr", "none", flag, value]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert done.returncode == 1 and message in done.stderr, (flag, value, done.stderr)


# --- bearer tokens: a token service of our own, as Docker Hub's auth.docker.io ------------

class TokenService:
    """A minimal OCI token service: checks basic credentials, answers a JWT (RS256, signed with
    openssl) granting what was asked; the registry trusts its self-signed certificate."""

    def __init__(self, tmp: Path, users: dict[str, str]) -> None:
        import http.server
        import threading

        self.dir = tmp / "token-service"
        self.dir.mkdir()
        self.key, self.cert = self.dir / "key.pem", self.dir / "cert.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key),
                        "-out", str(self.cert), "-days", "2", "-subj", "/CN=corral-test-token"],
                       check=True, capture_output=True, timeout=60)
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"], check=True,
                             capture_output=True, timeout=60).stdout
        import base64
        self._x5c = base64.b64encode(der).decode()
        self.users = users
        self.requests: list[str] = []
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:             # noqa: N802 - http.server's name
                service.requests.append(self.path)
                status, body = service.answer(self.path, self.headers.get("Authorization"))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, path: str, authorization: str | None) -> tuple[int, dict]:
        import base64
        import time
        import urllib.parse

        query = urllib.parse.parse_qs(urllib.parse.urlparse(path).query)
        if not authorization or not authorization.startswith("Basic "):
            return 401, {"details": "credentials required"}
        user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
        if self.users.get(user) != password:
            return 401, {"details": "bad credentials"}
        access = []
        for scope in query.get("scope", []):
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {"iss": "corral-test-issuer", "sub": user, "aud": query["service"][0], "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access}
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)], input=signing_input.encode(),
                                   check=True, capture_output=True, timeout=60).stdout
        return 200, {"token": f"{signing_input}.{b64(signature)}"}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_bearer_token_auth(daemon: Daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = TokenService(tmp_path, {"bob": "t0ken-pass"})
    monkeypatch.setenv("CORRAL_CONFIG", str(tmp_path / "client-config"))
    registry = Registry(tmp_path, auth=(
        "auth:\n  token:\n"
        f"    realm: http://127.0.0.1:{tokens.port}/token\n    service: corral-test\n"
        f"    issuer: corral-test-issuer\n    rootcertbundle: {tokens.cert}\n"))
    d = daemon
    try:
        ref = f"{registry.host}/secure/bb:1"
        d.ok("tag", "busybox", ref)
        out = d.cli("push", ref)
        assert out.returncode != 0 and "token service answered 401" in out.stderr
        assert d.ok("login", "-u", "bob", "-p", "t0ken-pass", registry.host).strip() == "Login Succeeded"
        assert "Pushed" in d.ok("push", ref)
        original = image_id(d, ref)
        d.ok("rmi", ref)
        d.ok("pull", ref)
        assert image_id(d, ref) == original
        assert d.ok("run", "--rm", ref, "echo", "via-token").strip() == "via-token"
        # The registry asked for scoped tokens: pull+push for the push, pull for the pull.
        assert any("scope=repository%3Asecure%2Fbb%3Apull%2Cpush" in r for r in tokens.requests)
        assert any(r.endswith("scope=repository%3Asecure%2Fbb%3Apull") for r in tokens.requests)
    finally:
        registry.close()
        tokens.close()


def test_corrupt_blob_is_refused_and_not_stored(daemon: Daemon, registry: Registry) -> None:
    d = daemon
    ref = f"{registry.host}/broken/bb:1"
    d.ok("tag", "busybox", ref)
    d.ok("push", ref)
    layer = json.loads(d.ok("image", "inspect", "busybox"))[0]["RootFS"]["Layers"][0]
    original = image_id(d, ref)
    d.ok("rmi", "-f", original)
    blobs = d.data_root / "content" / "blobs" / "sha256"
    before = {p.name for p in blobs.iterdir()}
    # Truncate the layer in the registry's own storage: it now serves a short, wrong blob.
    data = registry.dir / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256"
    (stored,) = [p for p in data.rglob("data") if p.parent.name == layer.partition(":")[2]]   # uncompressed: digest = diff id
    stored.write_bytes(stored.read_bytes()[: stored.stat().st_size // 2])
    out = d.cli("pull", ref)
    assert out.returncode != 0 and ("bytes, expected" in out.stderr or "digest" in out.stderr), out.stderr
    assert {p.name for p in blobs.iterdir()} - before <= {original.partition(":")[2]}   # the config, never the layer
    assert ref not in d.ok("images")


def test_pull_an_image_umoci_made_and_skopeo_pushed(daemon: Daemon, registry: Registry, tmp_path: Path) -> None:
    umoci = shutil.which("umoci")
    if umoci is None:
        pytest.skip("needs umoci (Debian package umoci; make setup installs it)")
    layout = tmp_path / "layout"
    bundle = tmp_path / "bundle"
    subprocess.run([umoci, "init", "--layout", str(layout)], check=True, capture_output=True, timeout=60)
    subprocess.run([umoci, "new", "--image", f"{layout}:made"], check=True, capture_output=True, timeout=60)
    subprocess.run([umoci, "unpack", "--image", f"{layout}:made", str(bundle)], check=True, capture_output=True,
                   timeout=60)
    rootfs = bundle / "rootfs"
    (rootfs / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
    (rootfs / "bin" / "sh").symlink_to("busybox")
    (rootfs / "hello").write_text("made by umoci\n")
    subprocess.run([umoci, "repack", "--image", f"{layout}:made", str(bundle)], check=True, capture_output=True,
                   timeout=120)
    subprocess.run([umoci, "config", "--image", f"{layout}:made", "--config.cmd", "/bin/sh",
                    "--config.env", "PATH=/bin"], check=True, capture_output=True, timeout=60)
    skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:made", f"docker://{registry.host}/umoci/made:1")
    d = daemon
    d.ok("pull", f"{registry.host}/umoci/made:1")
    assert d.ok("run", "--rm", f"{registry.host}/umoci/made:1", "sh", "-c", "busybox cat /hello").strip() == (
        "made by umoci")


def test_pulls_are_counted_on_metrics(tmp_path: Path, cgroup_parent: str, registry: Registry) -> None:
    from ._metrics import metrics_daemon_on, samples, scrape
    with metrics_daemon_on(tmp_path, cgroup_parent) as d:
        port = d.metrics_port
        ref = f"{registry.host}/counted/bb:1"
        d.ok("tag", "busybox", ref)
        d.ok("push", ref)
        layer_size = json.loads(d.ok("image", "inspect", "busybox"))[0]["Size"]
        d.ok("rmi", "-f", image_id(d, "busybox"))
        d.ok("pull", ref)
        d.ok("pull", ref)                                   # nothing to download the second time
        assert d.cli("pull", f"{registry.host}/counted/missing:1").returncode != 0
        text, _ = scrape(port)
        assert samples(text, "corral_image_pulls_total", result="success") == [2]
        assert samples(text, "corral_image_pulls_total", result="failure") == [1]
        (downloaded,) = samples(text, "corral_image_pull_bytes_total")
        assert layer_size <= downloaded < 2 * layer_size             # one layer (a tar of it) and a config, once


def test_build_push_pull_run_and_zstd_layers_through_skopeo(daemon: Daemon, registry: Registry,
                                                            tmp_path: Path) -> None:
    d = daemon
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text('FROM busybox\nRUN echo built-here > /built\nCMD ["cat", "/built"]\n')
    ref = f"{registry.host}/built/app:1"
    d.ok("build", "-q", "-t", ref, str(ctx))
    d.ok("push", ref)
    # skopeo copies what we pushed (to an OCI layout) ...
    skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{tmp_path / 'copied'}:app")
    assert (tmp_path / "copied" / "index.json").exists()
    d.ok("rmi", ref)
    d.ok("pull", ref)
    assert d.ok("run", "--rm", ref).strip() == "built-here"
    # ... and pushes it, zstd-compressed, to a second registry (one that has none of
    # its blobs, so skopeo cannot reuse the plain ones), which we pull and run.
    other = Registry(tmp_path)
    try:
        zstd_ref = f"{other.host}/built/app:zstd"
        skopeo("copy", "--dest-tls-verify=false", "--format", "oci", "--dest-compress-format", "zstd",
               "--dest-compress", f"oci:{tmp_path / 'copied'}:app", f"docker://{zstd_ref}")
        layers = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{zstd_ref}"))["layers"]
        assert all(layer["mediaType"].endswith("+zstd") for layer in layers), layers
        d.ok("pull", zstd_ref)
        assert d.ok("run", "--rm", zstd_ref).strip() == "built-here"
    finally:
        other.close()
