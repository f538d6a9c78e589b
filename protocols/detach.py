"""Detach keys: docker's ``--detach-keys`` syntax and the matcher that spots them in a byte stream.

No I/O. ``parse_detach_keys("ctrl-p,ctrl-q")`` gives the bytes to look for;
an ``EscapeMatcher`` is fed the user's keystrokes a chunk at a time and says
what to pass on and whether the sequence was typed (moby/term's escape proxy).

Rules:

1. Bytes that could be the start of the sequence are held back, across
   chunks, until they either complete it (nothing of it is passed on) or stop
   matching (then they are passed on first, in order, as typed).
2. After a mismatch the byte that broke the match may itself start the
   sequence: ``ctrl-p ctrl-p ctrl-q`` passes one ``ctrl-p`` on and detaches.
3. Bytes after a completed sequence in the same chunk are dropped: the
   client is detaching.
"""

from __future__ import annotations

DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"

# moby/term's table: the name of each control character, by its code.
_CONTROL = ["ctrl-@", *(f"ctrl-{chr(c)}" for c in range(ord("a"), ord("z") + 1)),
            "ctrl-[", "ctrl-\\", "ctrl-]", "ctrl-^", "ctrl-_"]


class DetachKeysError(ValueError):
    """A ``--detach-keys`` value that is not docker's syntax."""


def parse_detach_keys(text: str) -> bytes:
    """Docker's ``--detach-keys`` syntax -> the byte sequence.

    Keys are separated by commas; each is one character (``a``, ``,`` cannot
    be one), ``ctrl-@``, ``ctrl-a`` ... ``ctrl-z``, ``ctrl-[``, ``ctrl-\\``,
    ``ctrl-]``, ``ctrl-^``, ``ctrl-_`` (lower case, as docker spells them) or
    ``DEL``.

    Raises:
        DetachKeysError: an unknown key name, or an empty value.
    """
    out = bytearray()
    for key in text.split(","):
        if len(key) == 1:
            code = ord(key)
            if code > 0x7F:
                raise DetachKeysError(f"unknown character: {key!r} (not ASCII)")
            out.append(code)
        elif key in _CONTROL:
            out.append(_CONTROL.index(key))
        elif key == "DEL":
            out.append(0x7F)
        else:
            raise DetachKeysError(f"unknown character: {key!r}")
    return bytes(out)


class EscapeMatcher:
    """Finds the detach sequence in keystrokes fed a chunk at a time (module rules)."""

    def __init__(self, keys: bytes) -> None:
        if not keys:
            raise ValueError("the detach sequence is empty")
        self.keys = keys
        self._matched = 0            # how many bytes of ``keys`` the held-back bytes match
        self.detached = False

    @property
    def pending(self) -> bytes:
        """Bytes held back: a prefix of the sequence typed so far."""
        return self.keys[:self._matched]

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """Feed keystrokes; returns (bytes to pass on now, whether the sequence is complete).

        Once complete, every later call passes nothing and answers True.
        """
        if self.detached:
            return b"", True
        out = bytearray()
        for byte in data:
            if byte == self.keys[self._matched]:
                self._matched += 1
                if self._matched == len(self.keys):
                    self.detached = True
                    return bytes(out), True
                continue
            if self._matched:
                out += self.keys[:self._matched]      # rule 1: they were keystrokes after all
                self._matched = 0
                if byte == self.keys[0]:              # rule 2
                    self._matched = 1
                    if len(self.keys) == 1:
                        self.detached = True
                        return bytes(out), True
                    continue
            out.append(byte)
        return bytes(out), False

    def flush(self) -> bytes:
        """At end of input: the held-back bytes, which never completed the sequence."""
        held, self._matched = self.pending, 0
        return held
