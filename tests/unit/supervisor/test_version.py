"""What corral says its version is: one constant, the same the package's metadata carries."""

from __future__ import annotations

import os
import platform
from importlib.metadata import version

from supervisor.commands import _client_version
from supervisor.version import VERSION, server_version


def test_the_constant_is_the_installed_package_version() -> None:
    # pyproject.toml reads it from supervisor/version.py: the CLI need not import importlib.metadata.
    assert version("corral") == VERSION == server_version()


def test_the_client_side_of_version() -> None:
    client = _client_version()
    assert client["Version"] == VERSION and client["ApiVersion"] == "1.41" and client["Os"] == "linux"
    assert client["PythonVersion"] == platform.python_version()
    assert client["Arch"] == {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
