"""Errors of protocols/: bytes or documents that do not follow their format.

``Local…`` errors mean we were asked to produce something invalid, ``Remote…``
that a peer (or a file) sent something invalid (h11's split).
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every format error; ``status_hint`` is the HTTP status it maps to."""

    status_hint = 400


class LocalProtocolError(ProtocolError):
    """We were asked to encode something the format cannot carry."""


class RemoteProtocolError(ProtocolError):
    """The bytes or document we received are malformed."""


class SpecError(RemoteProtocolError):
    """An OCI runtime ``config.json`` is malformed; the message names the field."""
