"""What corral says it is: its version, the Docker API version it answers with, Go's arch names.

Its own module so that ``corral version`` need not import the Engine.
"""

from __future__ import annotations

VERSION = "0.1.0"                # the package's (pyproject.toml reads it here)
API_VERSION = "1.41"             # the Docker Engine API version whose shapes we answer with


def server_version() -> str:
    """corral's version; a constant, since importlib.metadata costs ~20 ms of a CLI start."""
    return VERSION


def go_arch(machine: str) -> str:
    """uname machine -> Go's GOARCH, which Docker's version and platform fields use."""
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le",
            "s390x": "s390x", "riscv64": "riscv64"}.get(machine, machine)
