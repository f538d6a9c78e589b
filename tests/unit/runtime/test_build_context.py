"""COPY/ADD file work, the context index, the file hash cache and the step cache, on plain directories (no root)."""

from __future__ import annotations

import gzip
import io
import os
import socket
import stat
import tarfile
import time
from pathlib import Path

import pytest

from protocols.dockerfile import parse_dockerignore
from runtime.build_context import (
    RACY_NS,
    BuildCache,
    BuildContextError,
    ContextIndex,
    ContextNotVisible,
    FileHashes,
    cache_key,
    copy_sources,
    ensure_directory,
    index_directory,
    index_tar,
    open_image_view,
    resolve_sources,
    walk_context,
    write_context_tar,
)

FUTURE_NS = 1 << 62          # "now" for FileHashes: every file is old enough to be remembered


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "dir" / "sub").mkdir(parents=True)
    (ctx / "a.txt").write_text("a\n")
    (ctx / "b.txt").write_text("b\n")
    (ctx / "dir" / "sub" / "deep.txt").write_text("deep\n")
    os.chmod(ctx / "b.txt", 0o751)
    os.symlink("/etc", ctx / "escape")           # absolute: means the context's own /etc, which is missing
    os.symlink("../../outside", ctx / "dir" / "up")
    return ctx


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """A one-snapshot image view: /etc and /srv -> /etc."""
    view = tmp_path / "image"
    (view / "etc").mkdir(parents=True)
    os.chmod(view / "etc", 0o700)
    os.symlink("/etc", view / "srv")
    return view


def _index_dir(ctx: Path, **kw) -> ContextIndex:
    return index_directory(ctx, parse_ignore=parse_dockerignore, **kw)


def _index_upload(ctx: Path, *, keep: frozenset[str] = frozenset()) -> ContextIndex:
    """What the daemon indexes when the CLI uploads ``ctx`` (its .dockerignore applied by the CLI)."""
    ignore_file = ctx / ".dockerignore"
    ignore = parse_dockerignore(ignore_file.read_text() if ignore_file.exists() else "")
    buf = io.BytesIO()
    write_context_tar(ctx, ignore, buf, keep=keep)
    buf.seek(0)
    return index_tar(buf)


def _digest(index: ContextIndex, *sources: str) -> str:
    return index.digest(index.resolve_sources(list(sources)))


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return buf


def _file(name: str, *, mode: int = 0o644, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
    """A tar member: a directory when ``name`` ends in ``/``, else a file (its data given to ``_tar``)."""
    info = tarfile.TarInfo(name)
    info.mode, info.uid, info.gid = mode, uid, gid
    if name.endswith("/"):
        info.type = tarfile.DIRTYPE
    return info


# ---------------------------------------------------------------- resolving sources


@pytest.mark.parametrize("how", ["disk", "index"])
def test_sources_resolve_inside_the_root_with_globs(context: Path, how: str) -> None:
    if how == "disk":
        def resolve(sources: list[str]) -> list[list[str]]:
            return resolve_sources(context, sources)
    else:
        resolve = _index_dir(context).resolve_sources
    assert resolve(["a.txt", "/dir/../b.txt"]) == [["a.txt"], ["b.txt"]]
    assert resolve(["*.txt"]) == [["a.txt"], ["b.txt"]]
    assert resolve(["d*/s?b/*.txt"]) == [["dir", "sub", "deep.txt"]]
    assert resolve(["."]) == [[]]
    with pytest.raises(BuildContextError, match="file not found in build context"):
        resolve(["missing"])
    with pytest.raises(BuildContextError, match="file not found in build context"):
        resolve(["escape/passwd"])            # /etc of the context, not of the host
    with pytest.raises(BuildContextError, match="leaves the container's root"):
        resolve(["dir/up"])
    with pytest.raises(BuildContextError, match="matches nothing"):
        resolve(["*.nothing"])


# ---------------------------------------------------------------- the cache key (rule 4)


def test_digest_follows_content_mode_and_names_not_times(context: Path) -> None:
    def digests() -> tuple[str, str, str]:
        with _index_dir(context) as index:
            return _digest(index, "a.txt"), _digest(index, "dir"), _digest(index, "b.txt")

    before = digests()
    assert digests() == before
    os.utime(context / "a.txt", (0, 0))                       # times are not in the key
    os.utime(context / "dir" / "sub" / "deep.txt", (0, 0))
    assert digests() == before
    os.chmod(context / "a.txt", 0o600)                        # a mode: that source only
    after_mode = digests()
    assert after_mode[0] != before[0] and after_mode[1:] == before[1:]
    (context / "dir" / "sub" / "deep.txt").write_text("changed\n")   # content below a directory source
    after_content = digests()
    assert after_content[1] != after_mode[1] and after_content[0] == after_mode[0]
    os.rename(context / "dir" / "sub" / "deep.txt", context / "dir" / "sub" / "renamed.txt")
    after_rename = digests()
    assert after_rename[1] != after_content[1] and after_rename[0] == after_content[0]


def test_digest_follows_owners(tmp_path: Path) -> None:
    def index(uid: int) -> ContextIndex:
        return index_tar(_tar((_file("d/", mode=0o755), None), (_file("d/f", uid=uid), b"x"), (_file("g"), b"y")))

    with index(0) as root, index(1000) as other:
        assert _digest(root, "d") != _digest(other, "d") and _digest(root, "g") == _digest(other, "g")


def test_digest_names_the_resolved_source(context: Path) -> None:
    os.symlink("a.txt", context / "link")
    with _index_dir(context) as index:
        # The link resolves to a.txt: the same bytes, under the same resolved name.
        assert _digest(index, "link") == _digest(index, "a.txt")
        assert _digest(index, "a.txt", "b.txt") != _digest(index, "b.txt", "a.txt")


# ---------------------------------------------------------------- tar and directory alike (rule 3)


def _rich_context(tmp_path: Path) -> Path:
    ctx = tmp_path / "rich"
    for path, data in {"Dockerfile": "FROM x\n", "app/main.py": "print(1)\n", "app/empty": "",
                       "app/bin/tool": "#!/bin/sh\n", "logs/a.log": "l\n", "logs/keep.log": "k\n",
                       "node_modules/m/index.js": "js\n", "x.tmp": "t\n"}.items():
        (ctx / path).parent.mkdir(parents=True, exist_ok=True)
        (ctx / path).write_text(data)
    os.chmod(ctx / "app" / "bin" / "tool", 0o4755)
    os.chmod(ctx / "app" / "bin", 0o700)
    os.symlink("main.py", ctx / "app" / "link")
    os.link(ctx / "app" / "main.py", ctx / "app" / "hard.py")
    os.mkfifo(ctx / "app" / "fifo")
    with socket.socket(socket.AF_UNIX) as s:                 # sockets are never sent
        s.bind(str(ctx / "app" / "sock"))
    (ctx / ".dockerignore").write_text("logs\n!logs/keep.log\nnode_modules\n*.tmp\nDockerfile\n")
    return ctx


def test_a_directory_and_its_upload_index_alike(tmp_path: Path) -> None:
    ctx = _rich_context(tmp_path)
    keep = frozenset({"Dockerfile", ".dockerignore"})
    with _index_dir(ctx, keep=keep) as direct, _index_upload(ctx, keep=keep) as uploaded:
        assert {k: v.record("") for k, v in direct.entries.items()} == \
               {k: v.record("") for k, v in uploaded.entries.items()}
        assert _digest(direct, ".") == _digest(uploaded, ".")
        paths = {"/".join(k) for k in direct.entries}
    assert "app/sock" not in paths and "x.tmp" not in paths and "node_modules" not in paths
    assert {"Dockerfile", ".dockerignore", "logs", "logs/keep.log", "app/fifo"} <= paths
    assert "logs/a.log" not in paths


def test_excluded_directory_comes_back_as_an_implicit_parent(tmp_path: Path) -> None:
    ctx = _rich_context(tmp_path)
    os.chmod(ctx / "logs", 0o700)
    with _index_dir(ctx) as index:
        logs = index.entries[("logs",)]
    assert (logs.kind, logs.mode, logs.uid, logs.gid) == ("dir", 0o755, 0, 0)   # as the unpacker makes it


def test_walk_does_not_enter_an_excluded_directory(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "skip" / "deep").mkdir(parents=True)
    (ctx / "f").write_text("f")
    os.chmod(ctx / "skip", 0)                  # unreadable: walking it would fail (as root: still skipped)
    fd = os.open(ctx, os.O_RDONLY | os.O_DIRECTORY)
    try:
        walked = [parts for parts, _, _ in walk_context(fd, parse_dockerignore("skip\n"))]
    finally:
        os.close(fd)
        os.chmod(ctx / "skip", 0o755)
    assert walked == [("f",)]


def test_a_plain_tar_of_the_directory_indexes_alike(context: Path) -> None:
    """A remote client's tar (tarfile.add: a "." entry, hard links as links) keys as the directory does."""
    os.link(context / "a.txt", context / "hard.txt")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(context, arcname=".")
    buf.seek(0)
    with _index_dir(context) as direct, index_tar(buf) as uploaded:
        for source in (".", "a.txt", "hard.txt", "dir"):
            assert _digest(direct, source) == _digest(uploaded, source), source


# ---------------------------------------------------------------- the tar's rules (rule 2)


@pytest.mark.parametrize(("members", "message"), [
    ([(_file("../evil"), b"x")], "'..'"),
    ([(_file("/abs"), b"x")], "absolute"),
    ([(tarfile.TarInfo("l"), None), (_file("l/x"), b"x")], "goes through the symlink 'l'"),
    ([(_file("f"), b"x"), (_file("f/x"), b"x")], "parent 'f' is not a directory"),
])
def test_index_tar_refuses_what_the_unpacker_refuses(members: list, message: str) -> None:
    for info, _ in members:
        if info.name == "l":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc"
    with pytest.raises(BuildContextError, match=message):
        index_tar(_tar(*members))


def test_index_tar_hard_links_and_replacements() -> None:
    link = tarfile.TarInfo("copy")
    link.type, link.linkname = tarfile.LNKTYPE, "f"
    with index_tar(_tar((_file("f", mode=0o600), b"data"), (link, None), (_file("d/", mode=0o700), None),
                        (_file("d/x"), b"x"), (_file("d"), b"now a file"))) as index:
        assert index.entries[("copy",)] == index.entries[("f",)]
        assert ("d", "x") not in index.entries and index.entries[("d",)].kind == "file"
    dangling = tarfile.TarInfo("bad")
    dangling.type, dangling.linkname = tarfile.LNKTYPE, "nothing"
    with pytest.raises(BuildContextError, match="not an earlier file"):
        index_tar(_tar((dangling, None)))


def test_index_tar_reads_compressed_and_refuses_garbage(tmp_path: Path) -> None:
    plain = _tar((_file("f"), b"content"))
    packed = io.BytesIO(gzip.compress(plain.getvalue()))
    with index_tar(packed, spool_dir=tmp_path) as index, index_tar(plain) as uncompressed:
        assert _digest(index, "f") == _digest(uncompressed, "f")
        out = index.materialize([["f"]], tmp_path / "out")
        assert (out / "f").read_bytes() == b"content"
    with pytest.raises(BuildContextError, match="cannot read the build context"):
        index_tar(io.BytesIO(b"not a tar at all" * 64))
    truncated = io.BytesIO(_tar((_file("f"), b"x" * 4096)).getvalue()[:1024])
    with pytest.raises(BuildContextError):
        index_tar(truncated)


# ---------------------------------------------------------------- unpacking on a miss (rule 5)


@pytest.mark.parametrize("how", ["directory", "upload"])
def test_materialize_unpacks_only_what_a_step_needs(tmp_path: Path, how: str) -> None:
    ctx = _rich_context(tmp_path)
    index = _index_dir(ctx) if how == "directory" else _index_upload(ctx)
    with index:
        dest = tmp_path / f"out-{how}"
        index.materialize(index.resolve_sources(["app/bin"]), dest)
        assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == ["app", "app/bin", "app/bin/tool"]
        assert stat.S_IMODE(os.stat(dest / "app" / "bin" / "tool").st_mode) == 0o4755
        assert stat.S_IMODE(os.stat(dest / "app" / "bin").st_mode) == 0o700
        index.materialize(index.resolve_sources(["app/*.py", "app/link"]), dest)      # a second step adds
        assert (dest / "app" / "main.py").read_text() == "print(1)\n"
        assert (dest / "app" / "hard.py").read_text() == "print(1)\n"
        assert not (dest / "app" / "fifo").exists()


def test_materialize_then_copy_makes_the_layer(context: Path, image: Path, tmp_path: Path) -> None:
    with _index_dir(context) as index:
        entries = index.resolve_sources(["dir"])
        root = index.materialize(entries, tmp_path / "unpacked")
        layer = tmp_path / "layer"
        layer.mkdir()
        copy_sources(root, entries, "/app", layer, image)
    assert (layer / "app" / "sub" / "deep.txt").read_text() == "deep\n"
    assert os.readlink(layer / "app" / "up") == "../../outside"


def test_materialize_refuses_a_file_changed_since_indexing(context: Path, tmp_path: Path) -> None:
    with _index_dir(context) as index:
        (context / "a.txt").write_text("b\n")                 # same size, other bytes
        with pytest.raises(BuildContextError, match="a.txt changed during the build"):
            index.materialize([["a.txt"]], tmp_path / "out")
        (context / "b.txt").unlink()
        with pytest.raises(BuildContextError, match="b.txt changed during the build"):
            index.materialize([["b.txt"]], tmp_path / "out2")


def test_index_directory_checks_it_is_the_clients(context: Path) -> None:
    st = os.stat(context)
    with _index_dir(context, identity=(st.st_dev, st.st_ino)):
        pass
    with pytest.raises(ContextNotVisible, match="is not the client's"):
        _index_dir(context, identity=(st.st_dev, st.st_ino + 1))
    with pytest.raises(ContextNotVisible, match="not on the daemon's host"):
        _index_dir(context / "missing")


# ---------------------------------------------------------------- remembered digests (rule 6)


def _poison(hashes_path: Path, context: Path, rel: str, digest: str) -> None:
    """Make the cache answer ``digest`` for ``rel`` as it is now: a lookup that trusts it shows it."""
    hashes = FileHashes(hashes_path, now_ns=FUTURE_NS)
    hashes.put(rel, os.lstat(context / rel), digest)
    hashes.save()


def test_file_hashes_are_trusted_only_while_the_file_is_unchanged(context: Path, tmp_path: Path) -> None:
    path = tmp_path / "hashes" / "ctx.json"
    fake = "sha256:" + "f" * 64

    def digest_of_a() -> str:
        hashes = FileHashes(path, now_ns=FUTURE_NS)
        with _index_dir(context, hashes=hashes) as index:
            return index.entries[("a.txt",)].digest

    real = digest_of_a()
    _poison(path, context, "a.txt", fake)
    assert digest_of_a() == fake                              # unchanged: not even read

    st = os.stat(context / "a.txt")
    while time.time_ns() < st.st_ctime_ns + 50_000_000:       # past the file system's timestamp tick
        time.sleep(0.01)
    (context / "a.txt").write_text("a\n")                     # same bytes, same size
    os.utime(context / "a.txt", ns=(st.st_atime_ns, st.st_mtime_ns))   # mtime put back: only ctime moved
    assert os.stat(context / "a.txt").st_ctime_ns != st.st_ctime_ns
    assert digest_of_a() == real

    _poison(path, context, "a.txt", fake)
    (context / "a.txt").write_text("a\nlonger\n")             # size
    assert digest_of_a() not in (fake, real)

    _poison(path, context, "a.txt", fake)
    (context / "new").write_text("a\nlonger\n")
    os.replace(context / "new", context / "a.txt")            # another inode
    assert digest_of_a() != fake


@pytest.mark.parametrize("change", ["st_dev", "st_ino", "st_size", "st_mtime_ns", "st_ctime_ns"])
def test_file_hashes_compare_every_stamp(tmp_path: Path, change: str) -> None:
    (tmp_path / "f").write_text("x")
    st = os.stat(tmp_path / "f")
    hashes = FileHashes(tmp_path / "h.json", now_ns=FUTURE_NS)
    hashes.put("f", st, "sha256:1")
    hashes.save()
    again = FileHashes(tmp_path / "h.json", now_ns=FUTURE_NS)
    assert again.get("f", st) == "sha256:1"

    class Changed:
        def __getattr__(self, name: str) -> int:
            return getattr(st, name) + (1 if name == change else 0)

    assert again.get("f", Changed()) is None


def test_file_hashes_skip_racy_files_and_forget_gone_ones(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    (tmp_path / "g").write_text("y")
    st_f, st_g = os.stat(tmp_path / "f"), os.stat(tmp_path / "g")
    now = max(st_f.st_ctime_ns, st_f.st_mtime_ns) + RACY_NS // 2          # changed half a racy window ago
    hashes = FileHashes(tmp_path / "h.json", now_ns=now)
    hashes.put("f", st_f, "sha256:1")
    hashes.put("g", st_g, "sha256:2")
    hashes.save()
    assert FileHashes(tmp_path / "h.json").get("f", st_f) is None          # not remembered
    old = FileHashes(tmp_path / "h.json", now_ns=FUTURE_NS)
    old.put("f", st_f, "sha256:1")
    old.put("g", st_g, "sha256:2")
    old.save()
    seen_f_only = FileHashes(tmp_path / "h.json", now_ns=FUTURE_NS)
    assert seen_f_only.get("f", st_f) == "sha256:1"
    seen_f_only.save()                                                     # g was not looked at: dropped
    assert FileHashes(tmp_path / "h.json").get("g", st_g) is None
    (tmp_path / "h.json").write_text("{not json")
    assert FileHashes(tmp_path / "h.json").get("f", st_f) is None         # a broken cache is an empty one


def test_file_hashes_live_beside_the_step_cache(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path / "build-cache.json")
    a, b = cache.file_hashes("/src/a"), cache.file_hashes("/src/b")
    assert a.path.parent == tmp_path / "build-hashes" and a.path != b.path
    assert cache.file_hashes("/src/a").path == a.path


# ---------------------------------------------------------------- COPY / ADD


def test_copy_file_to_a_path_into_a_dir_and_through_image_symlinks(context: Path, image: Path, tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    layer.mkdir()
    copy_sources(context, [["a.txt"]], "/opt/renamed", layer, image)
    assert (layer / "opt" / "renamed").read_text() == "a\n"
    copy_sources(context, [["b.txt"]], "/opt/dir/", layer, image)
    assert (layer / "opt" / "dir" / "b.txt").stat().st_mode & 0o777 == 0o751
    # /etc exists in the image: the file lands inside it, and the layer's /etc keeps the image's mode.
    copy_sources(context, [["a.txt"]], "/etc", layer, image)
    assert (layer / "etc" / "a.txt").exists() and (layer / "etc").stat().st_mode & 0o777 == 0o700
    # /srv is a symlink to /etc in the image: followed inside the image.
    copy_sources(context, [["b.txt"]], "/srv/", layer, image)
    assert (layer / "etc" / "b.txt").exists() and not (layer / "srv").exists()


def test_copy_directory_copies_its_contents(context: Path, image: Path, tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    layer.mkdir()
    copy_sources(context, [["dir"]], "/app", layer, image)
    assert (layer / "app" / "sub" / "deep.txt").read_text() == "deep\n"
    assert not (layer / "app" / "dir").exists()
    with pytest.raises(BuildContextError, match="must be a directory and end with a /"):
        copy_sources(context, [["a.txt"], ["b.txt"]], "/many", layer, image)


def test_add_extracts_archives(context: Path, image: Path, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("inner/file")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"in\n"))
    (context / "t.tgz").write_bytes(buf.getvalue())
    layer = tmp_path / "layer"
    layer.mkdir()
    copy_sources(context, [["t.tgz"]], "/x/", layer, image, extract_archives=True)
    assert (layer / "x" / "inner" / "file").read_text() == "in\n"
    copy_sources(context, [["t.tgz"]], "/y/", layer, image)               # COPY: the file itself
    assert (layer / "y" / "t.tgz").read_bytes() == buf.getvalue()


def test_workdir_only_when_missing(image: Path, tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    layer.mkdir()
    assert not ensure_directory(layer, image, "/etc")
    assert not ensure_directory(layer, image, "/srv")                    # a symlink to a directory
    assert ensure_directory(layer, image, "/work/dir")
    assert (layer / "work" / "dir").is_dir()


def test_views_without_a_mount(tmp_path: Path) -> None:
    with open_image_view([tmp_path], tmp_path / "unused") as view:
        assert view == tmp_path
    with open_image_view([], tmp_path / "empty") as view:
        assert list(view.iterdir()) == []
    assert not (tmp_path / "empty").exists()


def test_cache_index(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path / "build-cache.json")
    key = cache_key(None, "RUN x", "")
    assert key != cache_key("sha256:" + "0" * 64, "RUN x") and key != cache_key(None, "RUN y")
    assert cache.get(key) is None
    cache.put(key, "sha256:abc")
    assert BuildCache(tmp_path / "build-cache.json").get(key) == "sha256:abc"
    cache.drop(key)
    assert cache.get(key) is None
    (tmp_path / "build-cache.json").write_text("not json")
    assert cache.get(key) is None                                         # a broken index is an empty one
