"""``corral build``'s client side against the real RPC server in a thread: the blocking
adapter, the directory handover, and the tar upload it falls back to (no root, no daemon)."""

from __future__ import annotations

import functools
import grp
import io
import os
import threading
from pathlib import Path
from typing import Any, Self

import pytest
import trio

from protocols.dockerfile import parse_dockerignore
from runtime.build_context import index_directory, index_tar
from supervisor import build_cli, cli, commands
from supervisor.blocking_client import BlockingClient, RpcError
from supervisor.build import CONTEXT_UNAVAILABLE, ContextUnavailable, LocalContext
from supervisor.errors import InvalidRequest
from supervisor.rpc_server import Methods, serve_unix


class FakeDaemon:
    """The build methods of a daemon, served by ``rpc_server`` on a unix socket from a thread.

    ``image.build`` of a directory answers ``ContextUnavailable`` when ``refuse_directory``;
    an upload is indexed as the daemon indexes it and its digest of ``.`` comes back as an item.
    """

    def __init__(self, tmp: Path, *, refuse_directory: bool = False, old: bool = False) -> None:
        self.socket = tmp / "fake.sock"
        self.refuse_directory = refuse_directory
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.uploads: dict[str, bytearray] = {}
        self.methods = Methods()
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None

        @self.methods.unary("transfer.write")
        async def transfer_write(data: bytes, transfer: str | None = None) -> str:
            token = transfer or f"t{len(self.uploads)}"
            self.uploads.setdefault(token, bytearray()).extend(data)
            return token

        if old:     # an image.build from before directories: no `context` param
            @self.methods.stream("image.build")
            async def image_build_old(transfer: str, dockerfile: str, **params: Any):
                async for item in self._build({"transfer": transfer, "dockerfile": dockerfile, **params}):
                    yield item
        else:
            @self.methods.stream("image.build")
            async def image_build(dockerfile: str, transfer: str | None = None, context: dict | None = None,
                                  **params: Any):
                async for item in self._build({"dockerfile": dockerfile, "transfer": transfer, "context": context,
                                               **params}):
                    yield item

    async def _build(self, params: dict[str, Any]):
        self.calls.append(("image.build", params))
        if params.get("context") is not None:
            local = LocalContext.from_param(params["context"])
            if self.refuse_directory:
                raise ContextUnavailable(f"the build context directory {local.path} is not the client's")
            index = index_directory(local.path, parse_ignore=parse_dockerignore, keep=local.keep,
                                    identity=(local.device, local.inode))
        else:
            index = index_tar(io.BytesIO(bytes(self.uploads[params["transfer"]])))
        with index:
            yield {"stream": f"digest {index.digest([[]])}\n"}
        yield {"aux": {"ID": "sha256:" + "ab" * 32}}

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=trio.run, args=(self._serve,), daemon=True)
        self._thread.start()
        assert self._ready.wait(30)
        return self

    async def _serve(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as self._cancel:
            async with trio.open_nursery() as nursery:
                await nursery.start(functools.partial(serve_unix, self.socket, self.methods,
                                                      group=grp.getgrgid(os.getegid()).gr_name))
                self._ready.set()

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None and self._cancel is not None
        trio.from_thread.run_sync(self._cancel.cancel, trio_token=self._token)
        self._thread.join(30)


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY . /app/\n")
    (ctx / "src" / "main.c").write_text("int main() { return 0; }\n")
    (ctx / "build.log").write_text("noise\n")
    (ctx / ".dockerignore").write_text("*.log\nDockerfile\n")
    return ctx


def _args(daemon: FakeDaemon, *argv: str):
    return build_cli._parser().parse_args(["-H", f"unix://{daemon.socket}", "build", *argv])


def _digest_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("digest "))


def test_a_local_daemon_gets_the_directory(tmp_path: Path, context: Path) -> None:
    out = io.StringIO()
    with FakeDaemon(tmp_path) as daemon:
        assert build_cli.run_build(_args(daemon, "-t", "app:1", "--build-arg", "A=1", str(context)), out=out) == 0
    ((_, params),) = daemon.calls
    st = os.stat(context)
    assert params["context"] == {"path": str(context), "device": st.st_dev, "inode": st.st_ino,
                                 "keep": [".dockerignore", "Dockerfile"]}
    assert params["transfer"] is None and not daemon.uploads
    assert params["dockerfile"] == "FROM busybox\nCOPY . /app/\n" and params["tags"] == ["app:1"]
    assert params["build_args"] == {"A": "1"}
    assert out.getvalue().startswith("digest sha256:")


@pytest.mark.parametrize("daemon_kind", ["refuses the directory", "predates directories"])
def test_otherwise_the_context_is_uploaded_and_indexes_the_same(tmp_path: Path, context: Path,
                                                                 daemon_kind: str) -> None:
    (tmp_path / "direct").mkdir()
    with FakeDaemon(tmp_path / "direct") as direct:
        direct_out = io.StringIO()
        assert build_cli.run_build(_args(direct, str(context)), out=direct_out) == 0
    fallback = FakeDaemon(tmp_path, refuse_directory=daemon_kind == "refuses the directory",
                          old=daemon_kind == "predates directories")
    out = io.StringIO()
    with fallback:
        assert build_cli.run_build(_args(fallback, "-q", str(context)), out=out) == 0
    assert [p.get("transfer") is not None for _, p in fallback.calls] == \
           ([False, True] if daemon_kind == "refuses the directory" else [True])
    assert out.getvalue() == "sha256:" + "ab" * 32 + "\n"            # -q: the id, nothing printed before
    # The same context, uploaded: the daemon indexes it as it indexes the directory.
    uploaded = index_tar(io.BytesIO(bytes(next(iter(fallback.uploads.values())))))
    with uploaded:
        names = sorted("/".join(k) for k in uploaded.entries)
        assert names == [".dockerignore", "Dockerfile", "src", "src/main.c"]     # *.log left out, Dockerfile kept
        assert f"digest {uploaded.digest([[]])}" == _digest_line(direct_out.getvalue())


def test_upload_can_be_asked_for(tmp_path: Path, context: Path) -> None:
    with FakeDaemon(tmp_path) as daemon:
        assert build_cli.run_build(_args(daemon, str(context)), upload=True, out=io.StringIO()) == 0
    assert [p["context"] for _, p in daemon.calls] == [None] and len(daemon.uploads) == 1


def test_errors_and_exit_codes(tmp_path: Path, context: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = build_cli._parser().parse_args(["-H", f"unix://{tmp_path}/nobody.sock", "build", str(context)])
    assert build_cli.run_build(args) == 125
    assert "cannot talk to the daemon" in capsys.readouterr().err
    with FakeDaemon(tmp_path) as daemon:
        assert build_cli.run_build(_args(daemon, str(tmp_path / "missing"))) == 1
        assert "not found or not a directory" in capsys.readouterr().err
        assert build_cli.run_build(_args(daemon, "-f", str(tmp_path / "nope"), str(context))) == 1
        assert "cannot read the Dockerfile" in capsys.readouterr().err
    (context / ".dockerignore").write_text("[unclosed\n")
    with FakeDaemon(tmp_path, refuse_directory=True) as daemon:
        assert build_cli.run_build(_args(daemon, str(context))) == 1
    assert "corral: " in capsys.readouterr().err


def test_blocking_adapter_calls_and_streams(tmp_path: Path) -> None:
    with FakeDaemon(tmp_path) as daemon, BlockingClient(str(daemon.socket)) as conn:
        token = conn.call("transfer.write", data=b"abc")
        assert conn.call("transfer.write", data=b"def", transfer=token) == token
        assert bytes(daemon.uploads[token]) == b"abcdef"
        with pytest.raises(RpcError) as err:
            list(conn.stream("image.build", dockerfile="", context={"path": "relative"}))
        assert err.value.code == "BAD_REQUEST" and "context.path must be an absolute path" in err.value.message
        with pytest.raises(RpcError) as err:
            conn.call("no.such.method")
        assert err.value.code == "UNIMPLEMENTED"
        assert conn.call("transfer.write", data=b"", transfer=token) == token   # still usable after errors


def test_the_build_verb_is_routed_past_the_other_verbs() -> None:
    assert cli.verb_of(["build", "."]) == "build"
    assert cli.verb_of(["-H", "unix:///s", "build", "."]) == "build"
    assert cli.verb_of(["--host", "unix:///s", "build"]) == "build"
    assert cli.verb_of(["--host=unix:///s", "build"]) == "build"
    assert cli.verb_of(["-Hunix:///s", "build"]) == "build"
    assert cli.verb_of(["-H", "build", "ps"]) == "ps"              # "build" as the host's value
    assert cli.verb_of(["--help"]) is None and cli.verb_of([]) is None
    assert cli.verb_of(["ps", "build"]) == "ps"


def test_constants_agree_with_the_daemon_and_commands() -> None:
    assert build_cli.DEFAULT_HOST == commands.DEFAULT_HOST
    assert build_cli.CONTEXT_UNAVAILABLE == CONTEXT_UNAVAILABLE
    assert ContextUnavailable("x").details == {"reason": CONTEXT_UNAVAILABLE}
    assert isinstance(ContextUnavailable("x"), InvalidRequest)


@pytest.mark.parametrize(("doc", "message"), [
    ("a string", "context must be a map"),
    ({"path": "rel", "device": 1, "inode": 2}, "context.path must be an absolute path"),
    ({"path": "/x", "device": "1", "inode": 2}, "context.device must be a non-negative integer"),
    ({"path": "/x", "device": 1, "inode": True}, "context.inode must be a non-negative integer"),
    ({"path": "/x", "device": 1, "inode": 2, "keep": "Dockerfile"}, "context.keep must be a list"),
])
def test_local_context_param_is_checked(doc: object, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        LocalContext.from_param(doc)
    assert LocalContext.from_param({"path": "/x", "device": 1, "inode": 2, "keep": ["Dockerfile"]}) == \
        LocalContext("/x", 1, 2, frozenset({"Dockerfile"}))
