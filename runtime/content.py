"""A content-addressed blob store: ``<root>/blobs/sha256/<hex>``, verified on write.

Rules:

1. A blob file exists under its digest only once its bytes hash to that digest
   and are on disk: writes stream through a hasher into a temp file in the same
   directory, are fsynced, verified, then renamed into place (rename(2) is
   atomic within a directory). Readers never see a partial blob.
2. Temp files are named ``.tmp-*``, which is never a valid hex digest, so a
   crash mid-write leaves a file that ``has`` does not count and ``gc_temp``
   removes. Nothing else is ever written under ``blobs/``.
3. Digests are parsed (``protocols.oci_image.parse_digest``) before they
   become paths, so a digest can never name a file outside the store.

Rejected: hashing after writing (reads every blob twice), and writing in place
with a "complete" marker (two files to keep consistent instead of one rename).
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from protocols.oci_image import ImageFormatError, parse_digest

from .errors import HostError

_CHUNK = 1 << 20
_TMP_PREFIX = ".tmp-"


class ContentError(HostError):
    """A blob could not be written, read or found."""


class BlobNotFound(ContentError):
    """No blob has this digest."""


class DigestMismatch(ContentError):
    """The written bytes do not hash to (or are not as long as) what was expected."""


class ContentStore:
    """Blobs under ``root/blobs/<algorithm>/<hex>``; written with ``write_blob``, never in place."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def blob_path(self, digest: str) -> Path:
        """Where the blob of ``digest`` lives (it may not exist).

        Raises:
            ContentError: ``digest`` is malformed.
        """
        algorithm, hex_ = _parse(digest)
        return self.root / "blobs" / algorithm / hex_

    def has(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {digest} in {self.root}") from None

    def open_blob(self, digest: str) -> BinaryIO:
        """Open the blob for reading; the caller closes it.

        Raises:
            BlobNotFound: no such blob.
        """
        try:
            return open(self.blob_path(digest), "rb")
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {digest} in {self.root}") from None

    def read_blob(self, digest: str) -> bytes:
        with self.open_blob(digest) as f:
            return f.read()

    def delete_blob(self, digest: str) -> bool:
        """Remove the blob; False if it was not there."""
        try:
            self.blob_path(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def digests(self) -> Iterator[str]:
        """Every stored blob's digest (temp files excluded)."""
        blobs = self.root / "blobs"
        if not blobs.is_dir():
            return
        for algorithm_dir in sorted(blobs.iterdir()):
            for entry in sorted(algorithm_dir.iterdir()):
                if not entry.name.startswith(_TMP_PREFIX):
                    yield f"{algorithm_dir.name}:{entry.name}"

    def write_blob(self, data: bytes | BinaryIO | Iterable[bytes], *, expected_digest: str | None = None,
                   expected_size: int | None = None) -> str:
        """Store ``data`` and return its digest (``sha256:<hex>``, or the expected one's algorithm).

        Args:
            data: bytes, a binary file object (read to its end), or an iterable of chunks.
            expected_digest: refuse the data unless it hashes to this (a pull
                knows the digest before the first byte arrives).
            expected_size: refuse the data unless it is exactly this long;
                gives a clearer error than a digest mismatch for a truncated body.

        Returns:
            The digest. Writing a blob that is already stored is a no-op that
            still reads and verifies the data.

        Raises:
            DigestMismatch: the data does not match; nothing is stored and the temp file is gone.
            ContentError: the store could not be written.
        """
        algorithm = _parse(expected_digest)[0] if expected_digest is not None else "sha256"
        hasher = hashlib.new(algorithm)
        directory = self.root / "blobs" / algorithm
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ContentError(f"failed to create {directory}: {exc.strerror}") from exc
        tmp = directory / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        size = 0
        reading = False   # an error of the source is the caller's, not the store's
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            with open(fd, "wb", closefd=True) as out:
                chunks = _chunks(data)
                while True:
                    reading = True
                    chunk = next(chunks, None)
                    reading = False
                    if chunk is None:
                        break
                    hasher.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())   # on disk before it gets its name (rule 1)
            digest = f"{algorithm}:{hasher.hexdigest()}"
            if expected_size is not None and size != expected_size:
                raise DigestMismatch(f"blob {expected_digest or digest} is {size} bytes, expected {expected_size}")
            if expected_digest is not None and digest != expected_digest:
                raise DigestMismatch(f"blob content has digest {digest}, expected {expected_digest} ({size} bytes read)")
            os.rename(tmp, directory / digest.partition(":")[2])
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError) and not reading:
                raise ContentError(f"failed to write blob to {tmp}: {exc.strerror or exc}") from exc
            raise
        _fsync_dir(directory)   # the rename itself survives a crash
        return digest

    def gc_temp(self, *, older_than_s: float = 0.0) -> list[Path]:
        """Remove temp files left by interrupted writes; returns what was removed.

        .. warning:: with the default ``older_than_s=0`` this also removes the
           temp file of a write in progress (which then fails): call it at
           start-up, or pass an age longer than any write.
        """
        removed = []
        blobs = self.root / "blobs"
        if not blobs.is_dir():
            return removed
        limit = time.time() - older_than_s
        for algorithm_dir in blobs.iterdir():
            for entry in algorithm_dir.glob(f"{_TMP_PREFIX}*"):
                try:
                    if entry.stat().st_mtime <= limit:
                        entry.unlink()
                        removed.append(entry)
                except FileNotFoundError:
                    pass   # its writer finished or failed meanwhile
        return removed


def _parse(digest: str) -> tuple[str, str]:
    try:
        return parse_digest(digest)
    except ImageFormatError as exc:
        raise ContentError(str(exc)) from None


def _chunks(data: bytes | BinaryIO | Iterable[bytes]) -> Iterator[bytes]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        yield bytes(data)
    elif isinstance(data, io.IOBase) or hasattr(data, "read"):
        while chunk := data.read(_CHUNK):   # type: ignore[union-attr]
            yield chunk
    else:
        yield from data


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
