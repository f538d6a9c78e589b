"""runtime.image_archive without a daemon: round trips through both formats on a store
in tmp_path, and the member-name rules that keep an archive inside itself."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from runtime import image_archive as ia
from runtime.images import ImageStore


@pytest.fixture(name="store")
def store_fixture(tmp_path: Path) -> ImageStore:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "hello").write_text("#!/bin/sh\necho hello\n")
    store = ImageStore(tmp_path / "a")
    store.import_directory(root, "example.com/hello:1")
    return store


@pytest.mark.parametrize("fmt", ia.FORMATS)
def test_round_trip_keeps_the_image_id_and_tag(store: ImageStore, tmp_path: Path, fmt: str) -> None:
    out = io.BytesIO()
    ia.save(store, ["example.com/hello:1"], out, fmt=fmt)
    other = ImageStore(tmp_path / f"b-{fmt}")
    out.seek(0)
    (loaded,) = ia.load(other, out)
    original = store.get("example.com/hello:1")
    assert loaded == ia.Loaded(original.id, ("example.com/hello:1",))
    assert (other.get("example.com/hello:1").layer_dirs[0] / "bin" / "hello").read_text().startswith("#!/bin/sh")


def test_saved_by_id_loads_untagged(store: ImageStore, tmp_path: Path) -> None:
    out = io.BytesIO()
    ia.save(store, [store.get("example.com/hello:1").id], out)
    doc = json.loads(tarfile.open(fileobj=io.BytesIO(out.getvalue())).extractfile("manifest.json").read())
    assert doc[0]["RepoTags"] is None
    out.seek(0)
    (loaded,) = ia.load(ImageStore(tmp_path / "b"), out)
    assert loaded.tags == ()


@pytest.mark.parametrize("name, cleaned", [("a/b", "a/b"), ("./a//b/", "a/b"), ("a/../b", "b"), (".", None)])
def test_member_names_are_cleaned(name: str, cleaned: str | None) -> None:
    assert ia._clean(name) == cleaned


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../x"])
def test_member_names_may_not_leave_the_archive(name: str) -> None:
    with pytest.raises(ia.ArchiveFormatError):
        ia._clean(name)


def test_unknown_format_is_refused(store: ImageStore) -> None:
    with pytest.raises(ValueError, match="unknown archive format"):
        ia.save(store, ["example.com/hello:1"], io.BytesIO(), fmt="zip")
