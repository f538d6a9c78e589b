"""Docker's json-file log format, sans-IO: container output bytes <-> JSON lines, and the log options.

One entry per line, as moby's ``jsonfilelog`` writes them::

    {"log":"hello\\n","stream":"stdout","time":"2026-11-29T09:20:58.123456789Z"}

Rules this module lives by:

1. An entry's ``log`` holds at most ``MAX_ENTRY_BYTES`` (16 KiB, moby's copier
   buffer) of output. A line that ends in ``\\n`` keeps it; a longer one is cut
   into 16 KiB pieces without one (Docker's "partial" messages), and so is what
   is left when the stream ends without a newline. A line still open when a
   read ends waits for more bytes, as moby's copier does.
2. Output that is not UTF-8 is stored with U+FFFD in place of the bad bytes
   (Go's encoder does the same).
3. Encoding works on whole chunks with C-speed bytes operations (``replace``,
   ``translate``), never a Python loop per line: a container writing a
   gigabyte must not wait on us. Every line of one chunk gets the chunk's time
   (the time the daemon read it).
4. Times are written as RFC 3339 in UTC with exactly nine fractional digits,
   so they sort as strings and ``docker logs -t`` prints them unchanged.

SPEC: moby's encoder also escapes ``<``, ``>``, ``&``, U+2028 and U+2029
(``\\u003c`` ...). Any JSON reader reads both spellings the same, so we keep
them raw; bytes differ from a Docker-written file, values do not.

Rejected: ``json.dumps`` per line (a Python call per line: 10 million calls
for a gigabyte of 100-byte lines); orjson (not needed once encoding is
vectorized, and this package imports the stdlib only).
"""

from __future__ import annotations

import calendar
import json
import re
import time
from dataclasses import dataclass
from typing import BinaryIO

from .container_config import InvalidContainerConfig, parse_bytes
from .errors import RemoteProtocolError
from .units import parse_duration_ns

MAX_ENTRY_BYTES = 16 * 1024                 # moby daemon/logger/copier.go bufSize
STREAMS = ("stdout", "stderr")
DRIVERS = ("json-file", "none")

# Everything but the control characters JSON must escape (and "\n", which ends a line).
_NOT_CONTROL = bytes(range(0x20, 0x100)) + b"\n"
_SHORT_ESCAPES = {0x08: b"\\b", 0x09: b"\\t", 0x0C: b"\\f", 0x0D: b"\\r"}
_OPEN = b'{"log":"'


def format_time(ns: int) -> str:
    """Nanoseconds since the epoch -> ``2026-11-29T09:20:58.123456789Z`` (UTC, nine digits)."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


def escape(data: bytes) -> bytes:
    """``data`` as the inside of a JSON string, newlines left as they are (the caller's business).

    Bytes that are not UTF-8 become U+FFFD (rule 2).
    """
    if b"\\" in data:
        data = data.replace(b"\\", b"\\\\")
    if b'"' in data:
        data = data.replace(b'"', b'\\"')
    controls = data.translate(None, _NOT_CONTROL)
    for c in set(controls):
        data = data.replace(bytes((c,)), _SHORT_ESCAPES.get(c) or b"\\u%04x" % c)
    if not data.isascii():
        data = data.decode("utf-8", "replace").encode()
    return data


def _tail(stream: str, stamp: str) -> bytes:
    return f'","stream":"{stream}","time":"{stamp}"}}\n'.encode()


def encode_lines(data: bytes, *, stream: str, stamp: str) -> bytes | bytearray:
    """Complete lines (``data`` ends with ``\\n``, none longer than ``MAX_ENTRY_BYTES``) -> entries.

    One ``replace`` turns every newline into the end of one entry and the start of the next;
    the start after the last one is cut off in place. A bytearray, not bytes: the copier's
    main cost was copying ~1.8x its input twice more to cut that start off and prepend the
    first (bench/results/logs.md).
    """
    if not data:
        return b""
    tail = _tail(stream, stamp)
    body = bytearray(_OPEN)
    body += escape(data)
    body = body.replace(b"\n", b"\\n" + tail + _OPEN)
    del body[-len(_OPEN):]
    return body


def encode_piece(piece: bytes, *, stream: str, stamp: str) -> bytes:
    """One entry for ``piece`` as it is: a partial line (no newline) or one whole line."""
    if piece.endswith(b"\n"):
        return _OPEN + escape(piece[:-1]) + b"\\n" + _tail(stream, stamp)
    return _OPEN + escape(piece) + _tail(stream, stamp)


def _may_hold_long_line(data: bytes, limit: int) -> bool:
    """True if ``data`` may hold a run of ``limit`` bytes without a newline.

    Such a run covers a whole aligned window of ``limit // 2`` bytes, so a
    newline in every window proves there is none (a memchr per window).
    """
    half = limit // 2
    for start in range(0, len(data) - half + 1, half):
        if data.find(b"\n", start, start + half) < 0:
            return True
    return False


class StreamEncoder:
    """One stream's output bytes in, json-file entries out (rule 1 for the line rules).

    ::

        enc = StreamEncoder("stdout")
        blob = enc.encode(os.read(fd, 1 << 20), stamp=format_time(time.time_ns()))
        ...
        blob = enc.flush(stamp=...)      # at EOF: what is left, as a partial entry
    """

    def __init__(self, stream: str, *, max_entry_bytes: int = MAX_ENTRY_BYTES) -> None:
        if stream not in STREAMS:
            raise ValueError(f"stream must be one of {STREAMS}, not {stream!r}")
        self.stream = stream
        self._max = max_entry_bytes
        self._pending = b""

    @property
    def pending(self) -> int:
        """Bytes of an open line held back, waiting for its newline."""
        return len(self._pending)

    def encode(self, data: bytes, *, stamp: str) -> bytes | bytearray:
        """Entries for every line ``data`` completes; an open line is held back (``b""`` if none)."""
        if self._pending:
            data, self._pending = self._pending + data, b""
        end = data.rfind(b"\n") + 1
        complete, rest = data[:end], data[end:]
        out = []
        if complete:
            if len(complete) > self._max and _may_hold_long_line(complete, self._max):
                out.extend(encode_piece(p, stream=self.stream, stamp=stamp) for p in self._pieces(complete))
            else:
                out.append(encode_lines(complete, stream=self.stream, stamp=stamp))
        while len(rest) >= self._max:           # a full buffer without a newline: a partial entry
            out.append(encode_piece(rest[: self._max], stream=self.stream, stamp=stamp))
            rest = rest[self._max:]
        self._pending = rest
        return out[0] if len(out) == 1 else b"".join(out)       # the one buffer as it is: no copy

    def flush(self, *, stamp: str) -> bytes:
        """The held-back open line as a partial entry (the stream ended); ``b""`` if none."""
        rest, self._pending = self._pending, b""
        return encode_piece(rest, stream=self.stream, stamp=stamp) if rest else b""

    def _pieces(self, data: bytes):
        """Lines of ``data`` (ending in newlines), long ones cut into ``_max``-byte pieces."""
        start = 0
        while start < len(data):
            end = data.find(b"\n", start) + 1
            while end - start > self._max:
                yield data[start : start + self._max]
                start += self._max
            yield data[start:end]
            start = end


# --- reading -------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One decoded line: ``log`` as written (ends with "\\n" unless partial), ``time`` as in the file."""

    stream: str
    time: str
    log: str


def parse_entry(line: bytes | str) -> Entry:
    """One json-file line -> ``Entry``.

    Raises:
        RemoteProtocolError: not JSON, or ``log``/``stream``/``time`` missing or not strings.
    """
    try:
        doc = json.loads(line)
    except ValueError as exc:
        raise RemoteProtocolError(f"log line is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RemoteProtocolError("log line is not a JSON object")
    log, stream, stamp = doc.get("log"), doc.get("stream"), doc.get("time")
    if not isinstance(log, str) or not isinstance(stream, str) or not isinstance(stamp, str):
        raise RemoteProtocolError("log line lacks a string log, stream or time")
    return Entry(stream, stamp, log)


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt](\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?)?"
    r"([Zz]|[+-]\d{2}:\d{2})?"
)


def parse_time(text: str, *, local: bool = False) -> int:
    """An RFC 3339 time (and Docker's shorter forms) -> nanoseconds since the epoch.

    Accepts ``2026-11-29``, ``2026-11-29T09``, ``...T09:20``, ``...T09:20:58``,
    ``...T09:20:58.123456789``, each with ``Z`` or ``+hh:mm``/``-hh:mm``. Without a
    zone the time is UTC, or local time when ``local`` (the docker CLI's reading).

    Raises:
        ValueError: anything else.
    """
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError(f"cannot parse {text!r} as an RFC 3339 time")
    year, month, day, hour, minute, second = (int(g or 0) for g in m.groups()[:6])
    fraction, zone = m.group(7), m.group(8)
    fields = (year, month, day, hour, minute, second)
    try:
        if zone is None and local:
            seconds = int(time.mktime((*fields, 0, 0, -1)))
        else:
            if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
                raise ValueError("field out of range")
            seconds = calendar.timegm((*fields, 0, 0, 0))
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"cannot parse {text!r} as an RFC 3339 time: {exc}") from None
    if zone and zone not in "Zz":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds * 1_000_000_000 + int((fraction or "0").ljust(9, "0"))


def entry_time_ns(stamp: str) -> int:
    """An entry's ``time`` -> nanoseconds; our own fixed-width form takes the fast path.

    Raises:
        ValueError: not an RFC 3339 time.
    """
    if len(stamp) == 30 and stamp[10] == "T" and stamp[19] == "." and stamp[29] == "Z":
        seconds = calendar.timegm((int(stamp[0:4]), int(stamp[5:7]), int(stamp[8:10]), int(stamp[11:13]),
                                   int(stamp[14:16]), int(stamp[17:19]), 0, 0, 0))
        return seconds * 1_000_000_000 + int(stamp[20:29])
    return parse_time(stamp)


def parse_duration(text: str) -> int:
    """Go's ``time.ParseDuration`` (``10m``, ``1h30m``, ``1.5s``, ``-2h``) -> nanoseconds.

    Raises:
        ValueError: not a duration (a bare number other than ``0`` has no unit, so it is not one).
    """
    sign = -1 if text.startswith("-") else 1
    return sign * parse_duration_ns(text[1:] if text[:1] in "+-" else text)


_UNIX = re.compile(r"(\d+)(?:\.(\d{1,9}))?")


def parse_timestamp(value: str, *, now_ns: int, local: bool = True) -> int:
    """``--since``/``--until``: a duration before ``now_ns``, an RFC 3339 time or a Unix time -> ns.

    The docker CLI's ``GetTimestamp``: ``10m`` and ``1h30m`` are that long ago;
    ``2026-11-29T09:20:58Z`` (and the shorter forms of ``parse_time``; no zone
    means local time when ``local``); ``1764408058`` or ``1764408058.5`` are
    seconds since the epoch, the fraction being of a second.
    SPEC: docker truncates a relative time to whole seconds; we keep nanoseconds.

    Raises:
        ValueError: none of these.
    """
    value = value.strip()
    if value != "0":
        try:
            return now_ns - parse_duration(value)
        except ValueError:
            pass
    m = _UNIX.fullmatch(value)
    if m is not None:
        return int(m.group(1)) * 1_000_000_000 + int((m.group(2) or "0").ljust(9, "0"))
    try:
        return parse_time(value, local=local)
    except ValueError:
        raise ValueError(f"failed to parse value as time or duration: {value!r}") from None


def format_unix(ns: int) -> str:
    """Nanoseconds -> ``seconds.nanoseconds``, the form Docker's API takes for since/until."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    return f"{seconds}.{nanos:09d}"


# --- log options -------------------------------------------------------------------------


class LogConfigError(ValueError):
    """``--log-driver``/``--log-opt`` that cannot be used."""


@dataclass(frozen=True)
class LogConfig:
    """``HostConfig.LogConfig``: ``type`` json-file or none; ``max_size_bytes`` 0 is unlimited."""

    type: str = "json-file"
    max_size_bytes: int = 0
    max_files: int = 1


_SUPPORTED_OPTS = ("max-size", "max-file")
_JSON_FILE_OPTS = ("max-size", "max-file", "compress", "labels", "labels-regex", "env", "env-regex", "tag")


def parse_log_config(value: object) -> LogConfig:
    """Docker's ``{"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}`` -> ``LogConfig``.

    ``None``, ``{}`` or an empty Type is json-file with no limits (dockerd's default).
    ``max-size`` takes Docker's sizes (``10m``, ``1g``, ``512k``, bytes; binary
    units); ``max-file`` a count >= 1, default 1 (with a max-size, one file is
    truncated instead of rotated, as moby does).

    Raises:
        LogConfigError: a driver other than json-file or none; an option the driver
            does not know, or one of moby's we do not support; a malformed value.
    """
    if value is None:
        return LogConfig()
    if not isinstance(value, dict):
        raise LogConfigError("HostConfig.LogConfig: must be an object")
    driver = value.get("Type") or "json-file"
    opts = value.get("Config") or {}
    if not isinstance(driver, str) or driver not in DRIVERS:
        raise LogConfigError(f"logging driver {driver!r} is not supported (json-file or none)")
    if not isinstance(opts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in opts.items()):
        raise LogConfigError("HostConfig.LogConfig.Config: must be an object of strings")
    if driver == "none":
        if opts:
            raise LogConfigError(f"unknown log opt '{next(iter(opts))}' for none log driver")
        return LogConfig(type="none")
    for key in opts:
        if key not in _JSON_FILE_OPTS:
            raise LogConfigError(f"unknown log opt '{key}' for json-file log driver")
        if key not in _SUPPORTED_OPTS and not (key == "compress" and opts[key] in ("false", "0", "")):
            raise LogConfigError(f"log opt '{key}' of the json-file log driver is not supported by corral")
    max_size = 0
    if "max-size" in opts and opts["max-size"] not in ("", "-1"):
        try:
            max_size = parse_bytes(opts["max-size"], field="max-size")
        except InvalidContainerConfig:
            raise LogConfigError(f"invalid value for log opt 'max-size': {opts['max-size']!r} "
                                 f"(a size such as 10m, 1g, 512k or bytes)") from None
        if max_size <= 0:
            raise LogConfigError(f"invalid value for log opt 'max-size': {opts['max-size']!r} (must be positive)")
    max_files = 1
    if "max-file" in opts:
        text = opts["max-file"]
        if not text.isdecimal():
            raise LogConfigError(f"invalid value for log opt 'max-file': {text!r} (a whole number)")
        max_files = int(text)
        if max_files < 1:
            raise LogConfigError("max-file cannot be less than 1")
        if max_files > 1 and not max_size:
            raise LogConfigError("max-file can only be used with max-size")
    return LogConfig(type="json-file", max_size_bytes=max_size, max_files=max_files)


# --- tail --------------------------------------------------------------------------------


def read_tail(f: BinaryIO, n: int, *, end: int | None = None, block_size: int = 65536) -> list[bytes]:
    """The last ``n`` complete lines of the seekable binary file ``f`` (each with its newline).

    Reads blocks backwards from ``end`` (default: the end of the file), never the
    whole file. Bytes after the last newline (a line still being written) are not
    a line. Fewer than ``n`` lines come back when the file has fewer.
    """
    if n <= 0:
        return []
    if end is None:
        end = f.seek(0, 2)
    pos, blocks, newlines = end, [], 0
    while pos > 0 and newlines <= n:        # n whole lines need n+1 newlines in view (or the file's start)
        size = min(block_size, pos)
        pos -= size
        f.seek(pos)
        block = f.read(size)
        if not blocks:
            cut = block.rfind(b"\n")
            if cut < 0:                      # still inside the open last line
                continue
            block = block[: cut + 1]
        blocks.append(block)
        newlines += block.count(b"\n")
    if not blocks:
        return []
    lines = b"".join(reversed(blocks)).split(b"\n")[:-1]     # it ends with a newline
    if pos > 0:
        lines = lines[1:]                       # it may have begun before the first block read
    return [line + b"\n" for line in lines[-n:]]
