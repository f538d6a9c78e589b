"""Typed reads of a decoded JSON document, shared by the format parsers here.

Each takes the error class to raise, so a format keeps its own error type
(``SpecError``, ``ImageFormatError``) while every message reads the same way:
the field's path first, then what is wrong.
"""

from __future__ import annotations

from typing import Any

from .errors import ProtocolError


def required(obj: dict[str, Any], key: str, where: str, *, error: type[ProtocolError]) -> Any:
    """``obj[key]``; absent and null are both "missing"."""
    if obj.get(key) is None:
        raise error(f"{where}: required field is missing")
    return obj[key]


def obj(value: Any, where: str, *, error: type[ProtocolError]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise error(f"{where}: must be an object, got {type(value).__name__}")
    return value


def list_(value: Any, where: str, *, error: type[ProtocolError]) -> list[Any]:
    if not isinstance(value, list):
        raise error(f"{where}: must be a list, got {type(value).__name__}")
    return value


def string(value: Any, where: str, *, error: type[ProtocolError]) -> str:
    if not isinstance(value, str):
        raise error(f"{where}: must be a string, got {type(value).__name__}")
    return value
