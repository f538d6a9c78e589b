"""COPY/ADD file work, the context unpacker and the cache index, on plain directories (no root)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from runtime.build_context import (
    BuildCache,
    BuildContextError,
    cache_key,
    copy_sources,
    ensure_directory,
    hash_sources,
    open_image_view,
    resolve_sources,
    unpack_context,
)


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


def test_sources_resolve_inside_the_root_with_globs(context: Path) -> None:
    assert resolve_sources(context, ["a.txt", "/dir/../b.txt"]) == [["a.txt"], ["b.txt"]]
    assert resolve_sources(context, ["*.txt"]) == [["a.txt"], ["b.txt"]]
    assert resolve_sources(context, ["d*/s?b/*.txt"]) == [["dir", "sub", "deep.txt"]]
    assert resolve_sources(context, ["."]) == [[]]
    with pytest.raises(BuildContextError, match="file not found in build context"):
        resolve_sources(context, ["missing"])
    with pytest.raises(BuildContextError, match="file not found in build context"):
        resolve_sources(context, ["escape/passwd"])            # /etc of the context, not of the host
    with pytest.raises(BuildContextError, match="leaves the container's root"):
        resolve_sources(context, ["dir/up"])
    with pytest.raises(BuildContextError, match="matches nothing"):
        resolve_sources(context, ["*.nothing"])


def test_hash_changes_with_content_and_mode(context: Path) -> None:
    entries = resolve_sources(context, ["a.txt", "dir"])
    before = hash_sources(context, entries)
    assert hash_sources(context, entries) == before
    os.chmod(context / "a.txt", 0o600)
    after_mode = hash_sources(context, entries)
    assert after_mode != before
    (context / "dir" / "sub" / "deep.txt").write_text("changed\n")
    os.utime(context / "dir" / "sub" / "deep.txt", (0, 0))
    assert hash_sources(context, entries) != after_mode


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


def test_unpack_context_refuses_escapes(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../evil")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    buf.seek(0)
    with pytest.raises(BuildContextError, match="'..'"):
        unpack_context(buf, tmp_path / "ctx")
    assert not (tmp_path / "evil").exists()


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
