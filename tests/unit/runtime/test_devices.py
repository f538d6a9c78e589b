"""host_devices on this host's /dev: nodes found, pseudo-filesystems skipped."""

from __future__ import annotations

import os
from pathlib import Path

from runtime.devices import host_devices


def test_host_devices_lists_real_nodes() -> None:
    devices = {d["path"]: d for d in host_devices()}
    assert devices["/dev/null"]["type"] == "c"
    assert (devices["/dev/null"]["major"], devices["/dev/null"]["minor"]) == (1, 3)
    assert not any(p.startswith(("/dev/pts/", "/dev/shm/", "/dev/mqueue/")) for p in devices)


def test_regular_files_and_links_are_not_devices(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    os.symlink("/dev/null", tmp_path / "link")
    (tmp_path / "pts").mkdir()
    assert host_devices(tmp_path) == []
