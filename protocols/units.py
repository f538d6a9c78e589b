"""Docker's units (go-units, Go's durations), pure and cheap to import: the CLI parses with them."""

from __future__ import annotations

import re

# Go's time.ParseDuration, which Docker's flags and Compose use: a sequence of <number><unit>, or a bare "0".
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_NS_PER_UNIT = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
                "m": 60_000_000_000, "h": 3_600_000_000_000}


def parse_duration_ns(text: str, *, where: str = "") -> int:
    """A Go duration without a sign: "10s", "1m30s", "1.5h", "250ms", "0", in nanoseconds.

    Bare numbers are refused, as Docker and Compose refuse them: "10" could
    mean seconds or nanoseconds.

    Raises:
        ValueError: not a duration (the message starts with ``where``, if given).
    """
    text = text.strip()
    if text == "0":
        return 0
    pos, total = 0, 0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if not m:
            break
        number, unit = m.groups()
        whole, _, frac = number.partition(".")
        scale = _NS_PER_UNIT[unit]
        # Integer arithmetic, so "1.1s" is exactly 1_100_000_000 ns.
        total += int(whole or 0) * scale + (int(frac) * scale // 10 ** len(frac) if frac else 0)
        pos = m.end()
    if not text or pos != len(text):
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}invalid duration {text!r} (use e.g. '10s', '1m30s', '500ms')")
    return total


def human_duration(ns: int) -> str:
    """go-units HumanDuration, as `docker ps` prints it: "Less than a second", "3 minutes", "About an hour"."""
    seconds = ns / 1e9
    if seconds < 1:
        return "Less than a second"
    if seconds < 60:
        return f"{int(seconds)} seconds" if int(seconds) != 1 else "1 second"
    minutes = seconds / 60
    if minutes < 60:
        return "About a minute" if int(minutes) == 1 else f"{int(minutes)} minutes"
    hours = minutes / 60
    if hours < 48:
        return "About an hour" if int(hours) == 1 else f"{int(hours)} hours"
    return f"{int(hours / 24)} days"
