"""runtime/archive.py without root: resolving inside a root, tar out and in, the changes walk."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from runtime import archive
from runtime.archive import (
    CHANGE_ADD,
    CHANGE_DELETE,
    CHANGE_MODIFY,
    ArchiveError,
    CopyConflict,
    PathEscapes,
    PathNotFound,
    Root,
    TarStream,
    UpperEntry,
    classify_changes,
    clean_path,
    resolve_in_root,
)


@pytest.mark.parametrize(("path", "parts"), [
    ("", []), ("/", []), (".", []), ("/a/./b/../c", ["a", "c"]), ("../../etc", ["etc"]),
    ("a//b/", ["a", "b"]), ("/..", []), ("/a/..", []),
])
def test_clean_path_clamps_dotdot_at_the_root(path: str, parts: list[str]) -> None:
    assert clean_path(path) == parts


def _tree(links: dict[str, str], dirs: set[str]):
    """A fake root: ``links`` are symlinks (path -> target), ``dirs`` the other entries."""
    def readlink(parts: tuple[str, ...]) -> str | None:
        path = "/" + "/".join(parts)
        if path in links:
            return links[path]
        if path in dirs:
            return None
        raise FileNotFoundError(path)
    return readlink


TREE = _tree(
    {"/abs": "/etc", "/rel": "etc/../usr", "/esc": "../../etc", "/deep/esc": "../../../x",
     "/loop": "/loop", "/etc/up": "..", "/bin/sh": "busybox"},
    {"/etc", "/usr", "/deep", "/bin", "/bin/busybox", "/etc/passwd", "/usr/lib"},
)


def test_absolute_symlinks_resolve_inside_the_root() -> None:
    assert resolve_in_root("/abs/passwd", TREE) == ["etc", "passwd"]
    assert resolve_in_root("/rel/lib", TREE) == ["usr", "lib"]
    assert resolve_in_root("/etc/up/usr", TREE) == ["usr"]


def test_a_symlink_climbing_out_of_the_root_is_refused() -> None:
    with pytest.raises(PathEscapes, match="leaves the container's root"):
        resolve_in_root("/esc/passwd", TREE)
    with pytest.raises(PathEscapes):
        resolve_in_root("/deep/esc", TREE, follow_final=True)


def test_the_users_dotdot_is_clamped_not_refused() -> None:
    assert resolve_in_root("/../../../etc/passwd", TREE) == ["etc", "passwd"]
    assert resolve_in_root("../abs/../usr", TREE) == ["usr"]     # lexical, as Docker's Clean


def test_the_last_component_is_followed_only_when_asked() -> None:
    assert resolve_in_root("/bin/sh", TREE) == ["bin", "sh"]
    assert resolve_in_root("/bin/sh", TREE, follow_final=True) == ["bin", "busybox"]
    # Not followed, so an escaping link can be named (and copied as a link).
    assert resolve_in_root("/esc", TREE) == ["esc"]


def test_missing_parents_loops_and_missing_leaves() -> None:
    assert resolve_in_root("/etc/new", TREE, follow_final=True) == ["etc", "new"]
    with pytest.raises(PathNotFound, match="/nope"):
        resolve_in_root("/nope/file", TREE)
    with pytest.raises(ArchiveError, match="too many levels"):
        resolve_in_root("/loop/x", TREE)


def test_go_file_mode() -> None:
    assert archive.go_file_mode(stat.S_IFREG | 0o644) == 0o644
    assert archive.go_file_mode(stat.S_IFDIR | 0o755) == (1 << 31) | 0o755
    assert archive.go_file_mode(stat.S_IFLNK | 0o777) == (1 << 27) | 0o777
    assert archive.go_file_mode(stat.S_IFCHR | 0o600) == (1 << 26) | (1 << 21) | 0o600
    assert archive.go_file_mode(stat.S_IFREG | stat.S_ISUID | 0o755) == (1 << 23) | 0o755
    assert archive.is_dir_go_mode(archive.go_file_mode(stat.S_IFDIR | 0o700))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "data/sub").mkdir(parents=True)
    (r / "data/f.txt").write_text("hello\n")
    os.chmod(r / "data/f.txt", 0o640)
    (r / "data/sub/g").write_text("x")
    os.link(r / "data/f.txt", r / "data/hard")
    os.symlink("f.txt", r / "data/link")
    os.symlink("/data", r / "abs")
    os.symlink("../../../..", r / "data/out")
    (r / "etc").mkdir()
    return r


def _members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar}


def test_path_stat_and_a_tar_named_by_the_base_name(root: Path) -> None:
    with Root(root) as r:
        parts, info = archive.path_stat(r, "/abs/f.txt")       # through an absolute link
        assert parts == ["data", "f.txt"]
        assert info["name"] == "f.txt" and info["size"] == 6 and info["mode"] == 0o640
        _, link = archive.path_stat(r, "/data/link")
        assert link["linkTarget"] == "/data/f.txt" and link["mode"] & (1 << 27)
        with pytest.raises(PathNotFound):
            archive.path_stat(r, "/data/none")
        with pytest.raises(PathEscapes):
            archive.path_stat(r, "/data/out/etc")
        stream = TarStream(r, ["data"], "data")
        try:
            data = b"".join(iter(lambda: stream.read(1000), b""))  # small reads: chunk boundaries everywhere
        finally:
            stream.close()
    members = _members(data)
    assert sorted(members) == ["data", "data/f.txt", "data/hard", "data/link", "data/out", "data/sub",
                               "data/sub/g"]
    assert members["data/f.txt"].mode == 0o640 and members["data/f.txt"].uid == os.getuid()
    assert members["data/link"].issym() and members["data/link"].linkname == "f.txt"
    assert members["data/hard"].islnk() and members["data/hard"].linkname == "data/f.txt"
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.extractfile("data/f.txt").read() == b"hello\n"


def test_contents_only_and_the_whole_root(root: Path) -> None:
    with Root(root) as r:
        assert sorted(_members(TarStream(r, ["data"], "").read())) == [
            "f.txt", "hard", "link", "out", "sub", "sub/g"]
        assert {"abs", "data", "data/f.txt", "etc"} <= set(_members(TarStream(r, [], "").read()))


def _tar(entries: list[tuple[str, bytes | None, int]]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def test_extract_into_keeps_modes_renames_and_writes_whiteout_names_as_files(root: Path) -> None:
    src = _tar([("top", None, 0o750), ("top/x", b"1", 0o604), ("top/.wh.y", b"2", 0o644)])
    with Root(root) as r:
        archive.extract_into(r, ["etc"], src, same_owner=False,
                             rename=lambda n: "new" + n[3:] if n.startswith("top") else n)
    assert stat.S_IMODE(os.stat(root / "etc/new").st_mode) == 0o750
    assert (root / "etc/new/x").read_text() == "1" and stat.S_IMODE(os.stat(root / "etc/new/x").st_mode) == 0o604
    assert (root / "etc/new/.wh.y").read_text() == "2"


def test_extract_into_refuses_escapes_and_dir_nondir_clashes(root: Path) -> None:
    with Root(root) as r:
        with pytest.raises(ArchiveError, match=r"\.\."):
            archive.extract_into(r, ["etc"], _tar([("../evil", b"x", 0o644)]), same_owner=False)
        # A symlink inside the target is never written through.
        with pytest.raises(ArchiveError, match="symlink"):
            archive.extract_into(r, [], _tar([("abs/planted", b"x", 0o644)]), same_owner=False)
        with pytest.raises(CopyConflict, match="directory with a non-directory"):
            archive.extract_into(r, [], _tar([("data", b"x", 0o644)]), same_owner=False)
        with pytest.raises(ArchiveError, match="not a directory"):
            archive.extract_into(r, ["data", "f.txt"], _tar([("a", b"x", 0o644)]), same_owner=False)
    assert not (root.parent / "evil").exists() and not (root / "data/planted").exists()
    assert (root / "data").is_dir()


def test_classify_changes_as_docker_diff() -> None:
    entries = [
        UpperEntry("/bin", is_dir=True, in_lower=True, same_as_lower=True),     # only a parent: not listed
        UpperEntry("/bin/ls", whiteout=True),
        UpperEntry("/etc", is_dir=True, in_lower=True),                          # its mtime changed
        UpperEntry("/etc/passwd", in_lower=True),
        UpperEntry("/etc/new", is_dir=True),
        UpperEntry("/etc/new/x"),
        UpperEntry("/opt", is_dir=True, opaque=True, in_lower=True),             # rm -rf + mkdir
        UpperEntry("/opt/y"),
        UpperEntry("/new.txt"),
    ]
    assert classify_changes(entries) == [
        ("/bin", CHANGE_MODIFY), ("/bin/ls", CHANGE_DELETE),
        ("/etc", CHANGE_MODIFY), ("/etc/passwd", CHANGE_MODIFY), ("/etc/new", CHANGE_ADD),
        ("/etc/new/x", CHANGE_ADD),
        ("/opt", CHANGE_DELETE), ("/opt/y", CHANGE_ADD),
        ("/new.txt", CHANGE_ADD),
    ]


def test_scan_upper_compares_with_the_lower_layers(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc/passwd").write_text("root\n")
    (lower / "bin").mkdir()
    (upper / "etc").mkdir(parents=True)
    (upper / "etc/passwd").write_text("root\nme\n")
    (upper / "etc/hostname").write_text("")
    (upper / "bin").mkdir()
    os.utime(upper / "bin", (os.stat(lower / "bin").st_atime, os.stat(lower / "bin").st_mtime))
    (upper / "tmp").mkdir()
    (upper / "tmp/x").write_text("1")
    entries = archive.scan_upper(upper, [lower], skip=frozenset({"/etc/hostname"}))
    by_path = {e.path: e for e in entries}
    assert list(by_path) == ["/bin", "/etc", "/etc/passwd", "/tmp", "/tmp/x"]
    assert by_path["/bin"].same_as_lower and by_path["/etc"].same_as_lower      # /etc only holds hostname
    assert by_path["/etc/passwd"].in_lower and not by_path["/tmp"].in_lower
    assert classify_changes(entries) == [("/etc/passwd", CHANGE_MODIFY), ("/tmp", CHANGE_ADD),
                                         ("/tmp/x", CHANGE_ADD)]
