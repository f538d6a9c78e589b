"""Layer unpacking and packing: metadata kept, escapes refused, whiteouts converted.

Every escape test puts a sentinel directory next to the destination and checks
that it is exactly as before, and that neither the destination nor a temp
directory is left. Tests that need root (ownership, device nodes, overlay
whiteouts, trusted xattrs) are marked ``root``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from runtime.layers import (
    OVERLAY_OPAQUE_XATTR,
    LayerError,
    SnapshotExists,
    UnsafeLayerEntry,
    clean_entry_name,
    diff_id_of,
    pack_directory,
    unpack_layer,
)

MTIME = 1_600_000_000


def entry(name: str, kind: bytes = tarfile.REGTYPE, *, data: bytes = b"", mode: int = 0o644, link: str = "",
          uid: int | None = None, gid: int | None = None, mtime: int = MTIME, xattrs: dict[str, str] | None = None,
          dev: tuple[int, int] = (0, 0)) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = mtime
    info.uid = os.getuid() if uid is None else uid
    info.gid = os.getgid() if gid is None else gid
    info.linkname = link
    info.devmajor, info.devminor = dev
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in (xattrs or {}).items()}
    return info, data


def make_tar(*entries: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def area(tmp_path: Path) -> Path:
    """tmp/dest (to be created), and tmp/outside with a sentinel file in it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sentinel").write_text("untouched")
    return tmp_path


def snapshot_of(root: Path) -> dict[str, tuple]:
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        out[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns,
                                            path.read_bytes() if path.is_file() and not path.is_symlink() else None)
    return out


def assert_nothing_escaped(area: Path, before: dict[str, tuple]) -> None:
    assert snapshot_of(area / "outside") == before
    assert sorted(p.name for p in area.iterdir()) == ["outside"]   # no dest, no temp dir


# ---------------------------------------------------------------- what is kept


def test_files_dirs_links_and_metadata_are_kept(area: Path) -> None:
    layer = make_tar(
        entry("./", tarfile.DIRTYPE, mode=0o755, mtime=MTIME + 9),
        entry("./etc", tarfile.DIRTYPE, mode=0o750, mtime=MTIME + 1),
        entry("./etc/conf", data=b"k=v\n", mode=0o640, mtime=MTIME + 2),
        entry("bin/tool", data=b"#!x", mode=0o4755, mtime=MTIME + 3),   # parent implied
        entry("bin/alias", tarfile.SYMTYPE, link="tool", mtime=MTIME + 4),
        entry("bin/hard", tarfile.LNKTYPE, link="bin/tool"),
        entry("run/pipe", tarfile.FIFOTYPE, mode=0o620, mtime=MTIME + 5),
        entry("etc/" + "long" * 40, data=b"long name"),
    )
    dest = area / "dest"
    assert unpack_layer(io.BytesIO(layer), dest) == sha256(layer)
    conf = (dest / "etc/conf").stat()
    assert (dest / "etc/conf").read_bytes() == b"k=v\n"
    assert stat.S_IMODE(conf.st_mode) == 0o640 and conf.st_mtime == MTIME + 2
    etc = (dest / "etc").stat()
    assert stat.S_IMODE(etc.st_mode) == 0o750
    assert etc.st_mtime == MTIME + 1          # set after its children were written
    assert dest.stat().st_mtime == MTIME + 9  # the "./" entry is the snapshot root
    assert stat.S_IMODE((dest / "bin/tool").stat().st_mode) == 0o4755
    assert stat.S_IMODE((dest / "bin").stat().st_mode) == 0o755   # implied parent
    assert os.readlink(dest / "bin/alias") == "tool"
    assert (dest / "bin/alias").lstat().st_mtime == MTIME + 4
    assert (dest / "bin/hard").stat().st_ino == (dest / "bin/tool").stat().st_ino
    pipe = (dest / "run/pipe").lstat()
    assert stat.S_ISFIFO(pipe.st_mode) and stat.S_IMODE(pipe.st_mode) == 0o620 and pipe.st_mtime == MTIME + 5
    assert (dest / "etc" / ("long" * 40)).read_bytes() == b"long name"
    assert sorted(p.name for p in area.iterdir()) == ["dest", "outside"]


def test_later_entries_replace_earlier_ones(area: Path) -> None:
    layer = make_tar(
        entry("a", data=b"first"),
        entry("a", data=b"second"),
        entry("d/x", data=b"x"),
        entry("d", data=b"now a file"),
        entry("f", data=b"file"),
        entry("f", tarfile.DIRTYPE, mode=0o755),
    )
    dest = area / "dest"
    unpack_layer(io.BytesIO(layer), dest)
    assert (dest / "a").read_bytes() == b"second"
    assert (dest / "d").read_bytes() == b"now a file"
    assert (dest / "f").is_dir()


def test_user_xattrs_are_kept_and_overlay_ones_dropped(area: Path) -> None:
    layer = make_tar(entry("f", data=b"x", xattrs={"user.note": "hello", "trusted.overlay.redirect": "/etc"}))
    dest = area / "dest"
    try:
        unpack_layer(io.BytesIO(layer), dest)
    except LayerError as exc:
        pytest.skip(f"no user xattrs on this filesystem: {exc}")
    names = os.listxattr(dest / "f")
    if "user.note" not in names:
        pytest.skip("this filesystem drops user xattrs")
    assert os.getxattr(dest / "f", "user.note") == b"hello"
    assert "trusted.overlay.redirect" not in names


def _zstd(data: bytes) -> bytes:
    import zstandard   # a dependency (pyproject.toml): zstd layers are part of the image spec
    return zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize("compress", [gzip.compress, _zstd, lambda b: b], ids=["gzip", "zstd", "plain"])
def test_diff_id_is_the_digest_of_the_uncompressed_tar(area: Path, compress) -> None:
    layer = make_tar(entry("f", data=b"hello"))
    blob = area / "layer.tar"
    blob.write_bytes(compress(layer))
    assert diff_id_of(blob) == sha256(layer)
    assert unpack_layer(blob, area / "dest", expected_diff_id=sha256(layer)) == sha256(layer)
    assert (area / "dest/f").read_bytes() == b"hello"


def test_diff_id_mismatch_keeps_nothing(area: Path) -> None:
    before = snapshot_of(area / "outside")
    with pytest.raises(LayerError, match="expected sha256:0000"):
        unpack_layer(io.BytesIO(make_tar(entry("f"))), area / "dest", expected_diff_id="sha256:" + "0" * 64)
    assert_nothing_escaped(area, before)


def test_truncated_layer_keeps_nothing(area: Path) -> None:
    layer = make_tar(entry("f", data=b"x" * 5000))
    before = snapshot_of(area / "outside")
    with pytest.raises(LayerError, match="truncated"):
        unpack_layer(io.BytesIO(layer[:2048]), area / "dest")
    with pytest.raises(LayerError, match="truncated"):
        compressed = gzip.compress(layer)
        unpack_layer(io.BytesIO(compressed[:len(compressed) // 2]), area / "dest")
    assert_nothing_escaped(area, before)


def test_not_a_tar(area: Path) -> None:
    with pytest.raises(LayerError, match="malformed"):
        unpack_layer(io.BytesIO(b"hello, not a tar" * 100), area / "dest")
    assert not (area / "dest").exists()


def test_corrupt_zstd_keeps_nothing(area: Path) -> None:
    before = snapshot_of(area / "outside")
    with pytest.raises(LayerError):
        unpack_layer(io.BytesIO(b"\x28\xb5\x2f\xfd" + b"\0" * 64), area / "dest")
    assert_nothing_escaped(area, before)


def test_existing_destination_is_refused(area: Path) -> None:
    (area / "dest").mkdir()
    with pytest.raises(SnapshotExists):
        unpack_layer(io.BytesIO(make_tar(entry("f"))), area / "dest")


# ---------------------------------------------------------------- escapes


def test_names_are_cleaned() -> None:
    assert clean_entry_name("./a//b/./c/") == ["a", "b", "c"]
    assert clean_entry_name("./") == []
    for bad in ("/etc/passwd", "../x", "a/../../x", "a/.."):
        with pytest.raises(UnsafeLayerEntry):
            clean_entry_name(bad)


def escape_layers(outside: Path) -> dict[str, bytes]:
    return {
        "dotdot": make_tar(entry("ok", data=b"1"), entry("../outside/sentinel", data=b"owned")),
        "dotdot-inside": make_tar(entry("a/../../outside/sentinel", data=b"owned")),
        "absolute": make_tar(entry(str(outside / "sentinel"), data=b"owned")),
        # A symlink planted by one entry, written through by the next.
        "symlink-root": make_tar(entry("link", tarfile.SYMTYPE, link="/"),
                                 entry(f"link{outside}/sentinel", data=b"owned")),
        "symlink-outside": make_tar(entry("link", tarfile.SYMTYPE, link=str(outside)),
                                    entry("link/sentinel", data=b"owned")),
        "symlink-relative": make_tar(entry("d/link", tarfile.SYMTYPE, link="../../outside"),
                                     entry("d/link/new", data=b"owned")),
        "symlink-dir-entry": make_tar(entry("link", tarfile.SYMTYPE, link=str(outside)),
                                      entry("link/sub", tarfile.DIRTYPE, mode=0o777)),
        "symlink-whiteout": make_tar(entry("link", tarfile.SYMTYPE, link=str(outside)),
                                     entry("link/.wh.sentinel")),
        "hardlink-absolute": make_tar(entry("h", tarfile.LNKTYPE, link=str(outside / "sentinel"))),
        "hardlink-dotdot": make_tar(entry("h", tarfile.LNKTYPE, link="../outside/sentinel")),
        "hardlink-not-in-layer": make_tar(entry("h", tarfile.LNKTYPE, link="etc/passwd")),
        "hardlink-through-symlink": make_tar(entry("link", tarfile.SYMTYPE, link=str(outside)),
                                             entry("h", tarfile.LNKTYPE, link="link/sentinel")),
        "hardlink-to-dir": make_tar(entry("d", tarfile.DIRTYPE), entry("h", tarfile.LNKTYPE, link="d")),
    }


@pytest.mark.parametrize("case", sorted(escape_layers(Path("/x"))))
def test_escapes_are_refused_and_nothing_outside_is_touched(area: Path, case: str) -> None:
    outside = area / "outside"
    before = snapshot_of(outside)
    with pytest.raises(UnsafeLayerEntry):
        unpack_layer(io.BytesIO(escape_layers(outside)[case]), area / "dest")
    assert_nothing_escaped(area, before)
    assert (outside / "sentinel").read_text() == "untouched"


def test_a_file_over_a_symlink_replaces_the_link(area: Path) -> None:
    outside = area / "outside"
    before = snapshot_of(outside)
    layer = make_tar(entry("link", tarfile.SYMTYPE, link=str(outside / "sentinel")), entry("link", data=b"mine"))
    unpack_layer(io.BytesIO(layer), area / "dest")
    assert not (area / "dest/link").is_symlink() and (area / "dest/link").read_bytes() == b"mine"
    assert snapshot_of(outside) == before


def test_device_nodes_need_root_unless_same_owner(area: Path) -> None:
    layer = make_tar(entry("dev/null", tarfile.CHRTYPE, dev=(1, 3)))
    with pytest.raises(LayerError, match="device node; unpacking it needs root"):
        unpack_layer(io.BytesIO(layer), area / "dest", same_owner=False)
    assert not (area / "dest").exists()


# ---------------------------------------------------------------- root only


@pytest.mark.root
def test_ownership_and_setuid_survive_chown(area: Path) -> None:
    layer = make_tar(entry("d", tarfile.DIRTYPE, mode=0o2775, uid=1234, gid=5678),
                     entry("d/suid", data=b"x", mode=0o4755, uid=1234, gid=5678),
                     entry("d/link", tarfile.SYMTYPE, link="suid", uid=4321, gid=8765))
    dest = area / "dest"
    unpack_layer(io.BytesIO(layer), dest)
    st = (dest / "d/suid").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o4755)
    st = (dest / "d").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o2775)
    st = (dest / "d/link").lstat()
    assert (st.st_uid, st.st_gid) == (4321, 8765)


@pytest.mark.root
def test_device_nodes(area: Path) -> None:
    layer = make_tar(entry("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
                     entry("dev/loop9", tarfile.BLKTYPE, mode=0o660, dev=(7, 9)))
    dest = area / "dest"
    unpack_layer(io.BytesIO(layer), dest)
    null = (dest / "dev/null").lstat()
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1 and os.minor(null.st_rdev) == 3
    assert stat.S_IMODE(null.st_mode) == 0o666
    assert stat.S_ISBLK((dest / "dev/loop9").lstat().st_mode)


def is_whiteout(path: Path) -> bool:
    st = path.lstat()
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


@pytest.mark.root
def test_whiteouts_become_overlay_whiteouts(area: Path) -> None:
    layer = make_tar(
        entry("etc/.wh.passwd"),
        entry("var/.wh..wh..opq"),
        entry("var/keep", data=b"mine"),
        entry(".wh..wh.plnk"),            # aufs bookkeeping, skipped
        entry("mine", data=b"x"),
        entry(".wh.mine"),               # same layer: does not delete our own file
        entry("dir/f", data=b"x"),
        entry(".wh.dir"),                # same layer, a directory: becomes opaque
        entry(".wh.gone"),
        entry("gone", tarfile.DIRTYPE),  # deleted below and made again: opaque
    )
    dest = area / "dest"
    unpack_layer(io.BytesIO(layer), dest)
    assert is_whiteout(dest / "etc/passwd")
    assert not (dest / "etc/.wh.passwd").exists()
    assert os.getxattr(dest / "var", OVERLAY_OPAQUE_XATTR) == b"y"
    assert (dest / "var/keep").read_bytes() == b"mine"
    assert not (dest / ".wh..wh.plnk").exists() and not (dest / "plnk").exists()
    assert (dest / "mine").read_bytes() == b"x"
    assert os.getxattr(dest / "dir", OVERLAY_OPAQUE_XATTR) == b"y"
    assert (dest / "gone").is_dir() and os.getxattr(dest / "gone", OVERLAY_OPAQUE_XATTR) == b"y"


# ---------------------------------------------------------------- packing


def make_tree(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "bin/tool").write_bytes(b"#!tool")
    os.chmod(root / "bin/tool", 0o755)
    os.link(root / "bin/tool", root / "bin/tool2")
    os.symlink("tool", root / "bin/alias")
    (root / "etc").mkdir()
    (root / "etc/conf").write_text("x=1\n")
    os.chmod(root / "etc/conf", 0o600)
    os.mkfifo(root / "etc/fifo")
    (root / "é-utf8").write_text("name")
    for path in [*root.rglob("*"), root]:
        os.utime(path, (MTIME, MTIME + 7), follow_symlinks=False)
    return root


def test_pack_is_deterministic(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    first, digest1 = pack_directory(tree, out_dir=tmp_path)
    os.utime(tree / "etc/conf", (MTIME + 100, MTIME + 7))   # atime does not count
    second, digest2 = pack_directory(tree, out_dir=tmp_path)
    assert first.read_bytes() == second.read_bytes()
    assert digest1 == digest2 == sha256(first.read_bytes())
    with tarfile.open(first) as tar:
        names = tar.getnames()
        assert names == sorted(names, key=os.fsencode)
        assert {m.name: m.mtime for m in tar}["etc/conf"] == MTIME + 7
        assert all(m.uname == "" and m.gname == "" for m in tar)
        assert tar.getmember("bin/tool2").islnk() and tar.getmember("bin/tool2").linkname == "bin/tool"
    (tree / "etc/conf").write_text("x=2\n")
    os.utime(tree / "etc/conf", (MTIME, MTIME + 7))
    assert pack_directory(tree, out_dir=tmp_path)[1] != digest1


def test_pack_then_unpack_round_trips(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    tar, diff_id = pack_directory(tree, out_dir=tmp_path)
    assert unpack_layer(tar, tmp_path / "copy") == diff_id
    copy = tmp_path / "copy"
    assert snapshot_of(copy) == snapshot_of(tree)
    assert (copy / "bin/tool").stat().st_ino == (copy / "bin/tool2").stat().st_ino


def test_pack_refuses_a_non_directory(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(LayerError, match="not a directory"):
        pack_directory(tmp_path / "f")


@pytest.mark.root
def test_pack_turns_overlay_whiteouts_into_oci_ones_and_back(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    os.mknod(upper / "etc/passwd", stat.S_IFCHR, os.makedev(0, 0))
    (upper / "var").mkdir()
    os.setxattr(upper / "var", OVERLAY_OPAQUE_XATTR, b"y")
    (upper / "var/new").write_text("n")
    tar, _ = pack_directory(upper, out_dir=tmp_path, whiteouts=True)
    with tarfile.open(tar) as t:
        names = t.getnames()
        assert "etc/.wh.passwd" in names and "var/.wh..wh..opq" in names and "etc/passwd" not in names
        assert not any("trusted.overlay" in k for m in t for k in m.pax_headers)
    unpack_layer(tar, tmp_path / "again")
    assert is_whiteout(tmp_path / "again/etc/passwd")
    assert os.getxattr(tmp_path / "again/var", OVERLAY_OPAQUE_XATTR) == b"y"
    assert (tmp_path / "again/var/new").read_text() == "n"
