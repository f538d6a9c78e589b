"""Wire and file formats of corral: bytes <-> values, with no I/O at all.

Nothing here opens a socket or a file, or knows trio; every object takes bytes
or documents in and hands values out, so every split and malformed input is
tested without a network (h11's rule).
"""
# Nothing is imported here: every user imports the module it needs
# (``protocols.rpc``, ``protocols.runtime_spec``...), and the CLI's start-up
# pays only for those (a package-level re-export cost every command ~25 ms).
