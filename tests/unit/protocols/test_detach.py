"""Detach keys: docker's syntax, and the matcher fed every possible split of the keystrokes."""

from __future__ import annotations

import itertools

import pytest

from protocols.detach import (
    DEFAULT_DETACH_KEYS,
    DetachKeysError,
    EscapeMatcher,
    parse_detach_keys,
)

CTRL_P, CTRL_Q = b"\x10", b"\x11"


@pytest.mark.parametrize(("text", "keys"), [
    (DEFAULT_DETACH_KEYS, CTRL_P + CTRL_Q),
    ("ctrl-a,x", b"\x01x"),
    ("ctrl-@,ctrl-z", b"\x00\x1a"),
    ("ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_", b"\x1b\x1c\x1d\x1e\x1f"),
    ("DEL", b"\x7f"),
    ("a,b,c", b"abc"),
    ("q", b"q"),
])
def test_docker_syntax(text: str, keys: bytes) -> None:
    assert parse_detach_keys(text) == keys


@pytest.mark.parametrize("text", ["", "ctrl-", "ctrl-A", "ctrl-aa", "ctrl-p,,ctrl-q", "del", "ab", "é", "ctrl-1"])
def test_what_docker_refuses(text: str) -> None:
    with pytest.raises(DetachKeysError):
        parse_detach_keys(text)


def _feed_all(keys: bytes, chunks: list[bytes]) -> tuple[bytes, bool]:
    m = EscapeMatcher(keys)
    out = b""
    for chunk in chunks:
        passed, detached = m.feed(chunk)
        out += passed
        if detached:
            return out, True
    return out + m.flush(), False


def _splits(data: bytes):
    """Every way to cut ``data`` into chunks (2^(n-1) of them)."""
    for cuts in itertools.product((False, True), repeat=max(0, len(data) - 1)):
        chunks, start = [], 0
        for i, cut in enumerate(cuts, 1):
            if cut:
                chunks.append(data[start:i])
                start = i
        chunks.append(data[start:])
        yield chunks


@pytest.mark.parametrize(("typed", "passed", "detached"), [
    (b"ls\r" + CTRL_P + CTRL_Q + b"after", b"ls\r", True),          # rule 3: what follows is dropped
    (b"a" + CTRL_P + b"b", b"a" + CTRL_P + b"b", False),             # rule 1: a broken prefix goes on, in order
    (CTRL_P + CTRL_P + CTRL_Q, CTRL_P, True),                         # rule 2: the breaking byte starts over
    (CTRL_Q + CTRL_P, CTRL_Q + CTRL_P, False),                        # held to the end, then flushed
    (b"plain text", b"plain text", False),
    (CTRL_P + CTRL_Q, b"", True),
])
def test_matcher_across_every_chunk_boundary(typed: bytes, passed: bytes, detached: bool) -> None:
    for chunks in _splits(typed):
        assert _feed_all(CTRL_P + CTRL_Q, chunks) == (passed, detached), chunks


def test_a_prefix_is_held_back_until_it_breaks() -> None:
    m = EscapeMatcher(b"\x01x")
    assert m.feed(b"ab\x01") == (b"ab", False)
    assert m.pending == b"\x01"
    assert m.feed(b"y") == (b"\x01y", False)
    assert m.feed(b"\x01") == (b"", False)
    assert m.feed(b"x") == (b"", True)
    assert m.feed(b"more") == (b"", True)                 # detached for good


def test_longer_and_single_key_sequences() -> None:
    assert _feed_all(b"abc", [b"xaba", b"bcz"]) == (b"xab", True)
    assert _feed_all(b"abc", [b"ab", b"ab", b"x"]) == (b"ababx", False)
    assert _feed_all(b"\x1d", [b"hello\x1dworld"]) == (b"hello", True)
    with pytest.raises(ValueError):
        EscapeMatcher(b"")
