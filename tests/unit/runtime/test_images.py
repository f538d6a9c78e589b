"""The busybox root maker, with a stand-in busybox that lists two applets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime.errors import HostError
from runtime.images import make_busybox_rootfs


def test_every_applet_links_to_busybox(tmp_path: Path) -> None:
    fake = tmp_path / "busybox"
    fake.write_text("#!/bin/sh\nprintf 'busybox\\nsh\\nls\\n'\n")
    fake.chmod(0o755)
    root = make_busybox_rootfs(tmp_path / "rootfs", busybox=fake)
    assert (root / "bin/busybox").read_bytes() == fake.read_bytes()
    assert sorted(os.listdir(root / "bin")) == ["busybox", "ls", "sh"]
    assert os.readlink(root / "bin/sh") == "busybox"
    assert all((root / d).is_dir() for d in ("proc", "dev", "sys", "tmp", "etc", "root"))


def test_missing_busybox_is_named(tmp_path: Path) -> None:
    with pytest.raises(HostError, match="nope is missing"):
        make_busybox_rootfs(tmp_path / "rootfs", busybox=tmp_path / "nope")
