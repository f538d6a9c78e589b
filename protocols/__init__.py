"""Wire and file formats of corral: bytes <-> values, with no I/O at all.

Nothing here opens a socket or a file, or knows trio; every object takes bytes
or documents in and hands values out, so every split and malformed input is
tested without a network (h11's rule).
"""

from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError, SpecError
from .runtime_spec import (
    NAMESPACE_TYPES,
    Capabilities,
    Mount,
    Namespace,
    Process,
    Rlimit,
    Root,
    Spec,
    User,
    parse_spec,
)
from . import rpc  # the RPC codec, by module: its Request/Response/Error would shadow other formats' names

__all__ = [
    "NAMESPACE_TYPES",
    "Capabilities",
    "LocalProtocolError",
    "Mount",
    "Namespace",
    "Process",
    "ProtocolError",
    "RemoteProtocolError",
    "Rlimit",
    "Root",
    "Spec",
    "SpecError",
    "User",
    "parse_spec",
    "rpc",
]
