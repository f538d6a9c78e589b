"""Errors users and API clients see (STYLE.md "Errors").

A ``CorralError`` is an *expected* failure of a request: no such container, a
name already taken, a malformed request. Each class carries the RPC error
``code`` (the table in ``protocols.rpc.ERROR_CODES``) and ``status_hint``, the
HTTP status the Docker API layer answers with (h11's ``error_status_hint``).
The two agree by construction: ``status_hint`` is read from that table, and a
unit test checks every subclass names a known code.

The API adapters (RPC server, Docker HTTP server) turn these into error
responses; anything that is not a ``CorralError`` is a bug.
"""

from __future__ import annotations

from protocols.rpc import ERROR_CODES

TYPE_CHECKING = False       # typing's, without importing typing (~3 ms of every CLI command's start)
if TYPE_CHECKING:
    from typing import Any


class CorralError(Exception):
    """Base of every expected request failure; the message is lower-case, no trailing period."""

    code = "INTERNAL"
    status_hint = ERROR_CODES["INTERNAL"]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # One source of truth for the status: the protocol's table.
        if cls.code not in ERROR_CODES:
            raise TypeError(f"{cls.__name__}.code {cls.code!r} is not in protocols.rpc.ERROR_CODES")
        cls.status_hint = ERROR_CODES[cls.code]

    @property
    def details(self) -> dict[str, Any]:
        """Machine-readable extras sent with the error (``details`` of an RPC error frame)."""
        return {}


class InvalidRequest(CorralError):
    """The request is malformed or its parameters are wrong."""

    code = "BAD_REQUEST"


class PermissionDenied(CorralError):
    """The caller may not do this (e.g. a peer outside the ``corral`` group)."""

    code = "PERMISSION_DENIED"


class NoSuchContainer(CorralError):
    """No container has this id or name."""

    code = "NOT_FOUND"


class NoSuchImage(CorralError):
    """No image has this reference or id."""

    code = "NOT_FOUND"


class Conflict(CorralError):
    """The object is in the wrong state for this (stop a stopped container, remove a running one)."""

    code = "CONFLICT"


class NameInUse(Conflict):
    """Another container already has this name."""


class StartFailed(CorralError):
    """The container's init could not start its command.

    ``exit_code`` is what ``docker run`` would exit with: 126 when the command
    cannot be invoked, 127 when it is not found, else 1; it travels in the
    error frame's ``details``.
    """

    code = "INTERNAL"

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    @property
    def details(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code}


class NoSuchMethod(CorralError):
    """The RPC method is not implemented by this daemon (version skew)."""

    code = "UNIMPLEMENTED"


class Unavailable(CorralError):
    """The daemon cannot take this request now (shutting down, too many in flight)."""

    code = "UNAVAILABLE"


class NoSuchVolume(CorralError):
    """No volume has this name."""

    code = "NOT_FOUND"


class NoSuchExec(CorralError):
    """No exec instance has this id (supervisor/execs.py)."""

    code = "NOT_FOUND"
