"""What corral says it is: its version, the Docker API version it answers with, Go's arch names.

Its own module so that ``corral version`` need not import the Engine.
"""

from __future__ import annotations

API_VERSION = "1.41"             # the Docker Engine API version whose shapes we answer with


def server_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("corral")
    except PackageNotFoundError:
        return "dev"


def go_arch(machine: str) -> str:
    """uname machine -> Go's GOARCH, which Docker's version and platform fields use."""
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le",
            "s390x": "s390x", "riscv64": "riscv64"}.get(machine, machine)
