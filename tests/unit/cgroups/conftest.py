"""Fixture cgroupfs trees and mountinfo captures, copied into tmp_path (no root needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def mountinfo(name: str) -> str:
    return (FIXTURES / "mountinfo" / f"{name}.txt").read_text()


def self_cgroup(name: str) -> str:
    return (FIXTURES / "mountinfo" / f"{name}.self-cgroup.txt").read_text()


@pytest.fixture
def v1_root(tmp_path: Path) -> Path:
    root = tmp_path / "v1"
    shutil.copytree(FIXTURES / "cgroupfs" / "v1", root)
    return root


@pytest.fixture
def v2_root(tmp_path: Path) -> Path:
    root = tmp_path / "v2"
    shutil.copytree(FIXTURES / "cgroupfs" / "v2", root)
    return root
