"""protocols/jsonlog.py: the json-file line codec, time and duration parsing, log options, tail."""

from __future__ import annotations

import io
import json

import pytest

from protocols.errors import RemoteProtocolError
from protocols.jsonlog import (
    MAX_ENTRY_BYTES,
    LogConfig,
    LogConfigError,
    StreamEncoder,
    encode_lines,
    entry_time_ns,
    format_time,
    format_unix,
    parse_duration,
    parse_entry,
    parse_log_config,
    parse_time,
    parse_timestamp,
    read_tail,
)

STAMP = "2026-11-29T09:20:58.123456789Z"


def decode(blob: bytes) -> list[dict]:
    assert blob == b"" or blob.endswith(b"\n")
    return [json.loads(line) for line in blob.splitlines()]


def logs_of(blob: bytes) -> list[str]:
    return [d["log"] for d in decode(blob)]


# --- encoding ------------------------------------------------------------------------------------


def test_lines_become_docker_entries() -> None:
    blob = encode_lines(b"hello\nworld\n", stream="stdout", stamp=STAMP)
    assert blob == (b'{"log":"hello\\n","stream":"stdout","time":"2026-11-29T09:20:58.123456789Z"}\n'
                    b'{"log":"world\\n","stream":"stdout","time":"2026-11-29T09:20:58.123456789Z"}\n')
    assert encode_lines(b"", stream="stdout", stamp=STAMP) == b""
    assert logs_of(encode_lines(b"\n\n", stream="stderr", stamp=STAMP)) == ["\n", "\n"]


@pytest.mark.parametrize("raw", [
    b'quote " backslash \\ end',
    b"tab\tcr\rbell\x07esc\x1b[31mred\x1b[0m nul\x00 form\x0c back\x08 unit\x1f",
    "unicode: é ü 日本 🚀 \u2028".encode(),
    b"\\n literally, and \\\\ twice, and \\\"",
    b"",
])
def test_escaping_round_trips(raw: bytes) -> None:
    [entry] = decode(encode_lines(raw + b"\n", stream="stdout", stamp=STAMP))
    assert entry == {"log": raw.decode() + "\n", "stream": "stdout", "time": STAMP}


def test_short_escapes_as_json_writes_them() -> None:
    blob = encode_lines(b"\t\r\x08\x0c\x01\n", stream="stdout", stamp=STAMP)
    assert blob.startswith(b'{"log":"\\t\\r\\b\\f\\u0001\\n"')


def test_invalid_utf8_becomes_replacement_characters() -> None:
    [entry] = decode(encode_lines(b"bad \xff\xfe and cut \xe6\x97\n", stream="stdout", stamp=STAMP))
    assert entry["log"] == "bad \ufffd\ufffd and cut \ufffd\n"


def test_open_line_waits_for_its_newline() -> None:
    enc = StreamEncoder("stdout")
    assert enc.encode(b"par", stamp="1") == b""
    assert enc.pending == 3
    assert logs_of(enc.encode(b"tial\nnext", stamp="2")) == ["partial\n"]
    assert decode(enc.encode(b" one\n", stamp="3")) == [{"log": "next one\n", "stream": "stdout", "time": "3"}]
    assert enc.flush(stamp="4") == b""


def test_flush_at_eof_writes_the_open_line_without_newline() -> None:
    enc = StreamEncoder("stderr")
    assert logs_of(enc.encode(b"a\nno newline", stamp="1")) == ["a\n"]
    assert decode(enc.flush(stamp="2")) == [{"log": "no newline", "stream": "stderr", "time": "2"}]
    assert enc.pending == 0


def test_long_line_split_at_16k_as_docker() -> None:
    enc = StreamEncoder("stdout")
    line = bytes(ord("a") + i % 26 for i in range(40000))
    logs = logs_of(enc.encode(line + b"\nshort\n", stamp="1"))
    assert [len(x) for x in logs] == [MAX_ENTRY_BYTES, MAX_ENTRY_BYTES, 40000 - 2 * MAX_ENTRY_BYTES + 1, 6]
    assert "".join(logs[:3]) == line.decode() + "\n"
    assert [x.endswith("\n") for x in logs] == [False, False, True, True]


def test_line_of_exactly_16k_with_newline_stays_whole() -> None:
    enc = StreamEncoder("stdout")
    assert logs_of(enc.encode(b"x" * (MAX_ENTRY_BYTES - 1) + b"\n", stamp="1")) == ["x" * (MAX_ENTRY_BYTES - 1) + "\n"]
    # One byte more and the newline goes alone, as moby's copier does with a full buffer.
    assert logs_of(enc.encode(b"y" * MAX_ENTRY_BYTES + b"\n", stamp="1")) == ["y" * MAX_ENTRY_BYTES, "\n"]


def test_open_line_filling_the_buffer_is_flushed_as_partial_entries() -> None:
    enc = StreamEncoder("stdout")
    out = b""
    for _ in range(5):                                  # 5 x 10000 bytes, no newline at all
        out += enc.encode(b"z" * 10000, stamp="1")
    assert [len(x) for x in logs_of(out)] == [MAX_ENTRY_BYTES] * 3
    assert enc.pending == 50000 - 3 * MAX_ENTRY_BYTES
    assert [len(x) for x in logs_of(enc.flush(stamp="2"))] == [50000 - 3 * MAX_ENTRY_BYTES]


def test_every_split_point_gives_the_same_logs() -> None:
    data = b"one\ntwo \xc3\xa9\n" + b"w" * 20000 + b"\nlast"
    whole = StreamEncoder("stdout")
    expected = logs_of(whole.encode(data, stamp="t") + whole.flush(stamp="t"))
    for cut in range(0, len(data), 997):
        enc = StreamEncoder("stdout")
        blob = enc.encode(data[:cut], stamp="t") + enc.encode(data[cut:], stamp="t") + enc.flush(stamp="t")
        assert "".join(logs_of(blob)) == "".join(expected), cut


def test_stream_name_is_checked() -> None:
    with pytest.raises(ValueError):
        StreamEncoder("stdin")


def test_parse_entry() -> None:
    line = encode_lines(b"hi\n", stream="stderr", stamp=STAMP)
    e = parse_entry(line)
    assert (e.stream, e.time, e.log) == ("stderr", STAMP, "hi\n")
    for bad in (b"not json", b"[1]", b'{"log": 1, "stream": "stdout", "time": "x"}', b'{"log": "x"}'):
        with pytest.raises(RemoteProtocolError):
            parse_entry(bad)


# --- times ---------------------------------------------------------------------------------------


def test_format_time_is_fixed_width_utc() -> None:
    assert format_time(0) == "1970-01-01T00:00:00.000000000Z"
    assert format_time(1_764_408_058_000_000_001) == "2025-11-29T09:20:58.000000001Z"
    assert entry_time_ns(format_time(1_764_408_058_123_456_789)) == 1_764_408_058_123_456_789


@pytest.mark.parametrize(("text", "ns"), [
    ("2025-11-29T09:20:58Z", 1_764_408_058_000_000_000),
    ("2025-11-29T09:20:58.5Z", 1_764_408_058_500_000_000),
    ("2025-11-29T09:20:58.123456789Z", 1_764_408_058_123_456_789),
    ("2025-11-29T10:20:58+01:00", 1_764_408_058_000_000_000),
    ("2025-11-29T08:50:58-00:30", 1_764_408_058_000_000_000),
    ("2025-11-29", 1_764_374_400_000_000_000),
    ("2025-11-29T09", 1_764_406_800_000_000_000),
    ("2025-11-29T09:20", 1_764_408_000_000_000_000),
])
def test_parse_time(text: str, ns: int) -> None:
    assert parse_time(text) == ns
    assert entry_time_ns(text) == ns


@pytest.mark.parametrize("bad", ["", "yesterday", "2025-13-01", "2025-11-29T25:00:00Z", "2025-11-29 09:20:58"])
def test_parse_time_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_time(bad)


@pytest.mark.parametrize(("text", "ns"), [
    ("10m", 600_000_000_000), ("1h30m", 5_400_000_000_000), ("1.5s", 1_500_000_000), ("300ms", 300_000_000),
    ("2h45m10s", 9_910_000_000_000), ("1us", 1_000), ("5ns", 5), ("-2h", -7_200_000_000_000), ("0", 0),
    (".5m", 30_000_000_000),
])
def test_parse_duration(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize("bad", ["", "10", "m", "10x", "1h 30m", "h1", "1.5"])
def test_parse_duration_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_parse_timestamp_forms() -> None:
    now = 1_764_408_058_000_000_000
    assert parse_timestamp("10m", now_ns=now) == now - 600_000_000_000
    assert parse_timestamp("1h30m", now_ns=now) == now - 5_400_000_000_000
    assert parse_timestamp("1764408000", now_ns=now) == 1_764_408_000_000_000_000
    assert parse_timestamp("1764408000.25", now_ns=now) == 1_764_408_000_250_000_000
    assert parse_timestamp("1764408000.000000001", now_ns=now) == 1_764_408_000_000_000_001
    assert parse_timestamp("0", now_ns=now) == 0
    assert parse_timestamp("2025-11-29T09:20:58Z", now_ns=now) == now
    assert parse_timestamp("2025-11-29T09:20:58", now_ns=now, local=False) == now
    with pytest.raises(ValueError, match="failed to parse value as time or duration"):
        parse_timestamp("abc", now_ns=now)
    assert format_unix(1_764_408_000_000_000_001) == "1764408000.000000001"


# --- log options ---------------------------------------------------------------------------------


def test_log_config_defaults_and_values() -> None:
    assert parse_log_config(None) == LogConfig()
    assert parse_log_config({}) == LogConfig()
    assert parse_log_config({"Type": "", "Config": {}}) == LogConfig()
    assert parse_log_config({"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}) == LogConfig(
        "json-file", 10 << 20, 3)
    assert parse_log_config({"Config": {"max-size": "512k"}}) == LogConfig("json-file", 512 << 10, 1)
    assert parse_log_config({"Config": {"max-size": "100"}}).max_size_bytes == 100
    assert parse_log_config({"Type": "none"}) == LogConfig("none")


@pytest.mark.parametrize(("config", "message"), [
    ({"Type": "syslog"}, "logging driver 'syslog' is not supported"),
    ({"Config": {"max-size": "abc"}}, "invalid value for log opt 'max-size': 'abc'"),
    ({"Config": {"max-size": "0"}}, "must be positive"),
    ({"Config": {"max-size": "1m", "max-file": "x"}}, "invalid value for log opt 'max-file'"),
    ({"Config": {"max-size": "1m", "max-file": "0"}}, "max-file cannot be less than 1"),
    ({"Config": {"max-file": "3"}}, "max-file can only be used with max-size"),
    ({"Config": {"colour": "blue"}}, "unknown log opt 'colour' for json-file log driver"),
    ({"Config": {"compress": "true", "max-size": "1m"}}, "log opt 'compress'"),
    ({"Type": "none", "Config": {"max-size": "1m"}}, "unknown log opt 'max-size' for none log driver"),
    ({"Config": {"max-size": 10}}, "must be an object of strings"),
    ("json-file", "must be an object"),
])
def test_log_config_errors(config, message: str) -> None:
    with pytest.raises(LogConfigError, match=message.replace("(", r"\(")):
        parse_log_config(config)


# --- tail ----------------------------------------------------------------------------------------


def numbered(n: int, *, open_tail: bytes = b"") -> io.BytesIO:
    return io.BytesIO(b"".join(b"line %d\n" % i for i in range(n)) + open_tail)


@pytest.mark.parametrize("block_size", [1, 3, 7, 64, 65536])
def test_read_tail_exact_lines(block_size: int) -> None:
    f = numbered(1000, open_tail=b"being writ")
    assert read_tail(f, 3, block_size=block_size) == [b"line 997\n", b"line 998\n", b"line 999\n"]
    assert read_tail(f, 1, block_size=block_size) == [b"line 999\n"]
    assert read_tail(f, 0, block_size=block_size) == []
    assert len(read_tail(f, 5000, block_size=block_size)) == 1000
    assert read_tail(f, 5000, block_size=block_size)[0] == b"line 0\n"


def test_read_tail_edges() -> None:
    assert read_tail(io.BytesIO(b""), 3) == []
    assert read_tail(io.BytesIO(b"no newline"), 3) == []
    assert read_tail(io.BytesIO(b"\n\n"), 5) == [b"\n", b"\n"]
    assert read_tail(numbered(10), 2, end=len(b"line 0\nline 1\nline 2\n")) == [b"line 1\n", b"line 2\n"]


class CountingFile(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        self.read_bytes += len(data)
        return data


def test_read_tail_reads_from_the_end_only() -> None:
    f = CountingFile(numbered(200_000).getvalue())
    assert read_tail(f, 10, block_size=4096) == [b"line %d\n" % i for i in range(199_990, 200_000)]
    assert f.read_bytes <= 4096
