"""The blob store: verified writes, nothing stored on a mismatch, temp files never counted."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from runtime.content import BlobNotFound, ContentError, ContentStore, DigestMismatch

DATA = b"layer bytes " * 1000
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()
REPO = Path(__file__).resolve().parents[3]


def stored_files(store: ContentStore) -> list[str]:
    d = store.root / "blobs" / "sha256"
    return sorted(os.listdir(d)) if d.exists() else []


@pytest.mark.parametrize("data", [DATA, io.BytesIO(DATA), iter([DATA[:7], b"", DATA[7:]])],
                         ids=["bytes", "file", "chunks"])
def test_write_stores_under_the_digest(tmp_path: Path, data) -> None:
    store = ContentStore(tmp_path)
    assert store.write_blob(data) == DIGEST
    assert store.blob_path(DIGEST) == tmp_path / "blobs/sha256" / DIGEST[7:]
    assert store.has(DIGEST)
    assert store.read_blob(DIGEST) == DATA
    assert store.size(DIGEST) == len(DATA)
    with store.open_blob(DIGEST) as f:
        assert f.read(5) == DATA[:5]
    assert list(store.digests()) == [DIGEST]
    assert stored_files(store) == [DIGEST[7:]]   # no temp file left


def test_expected_digest_is_verified(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    assert store.write_blob(DATA, expected_digest=DIGEST, expected_size=len(DATA)) == DIGEST


def test_mismatch_stores_nothing(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    wrong = "sha256:" + "0" * 64
    with pytest.raises(DigestMismatch, match=f"expected {wrong}"):
        store.write_blob(DATA, expected_digest=wrong)
    assert not store.has(wrong) and not store.has(DIGEST)
    assert stored_files(store) == []


def test_truncated_input_is_refused(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    with pytest.raises(DigestMismatch, match=f"expected {DIGEST}"):
        store.write_blob(DATA[:-1], expected_digest=DIGEST)
    with pytest.raises(DigestMismatch, match=f"is {len(DATA) - 1} bytes, expected {len(DATA)}"):
        store.write_blob(io.BytesIO(DATA[:-1]), expected_digest=DIGEST, expected_size=len(DATA))
    assert stored_files(store) == []


def test_failing_source_leaves_nothing(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)

    def chunks():
        yield DATA
        raise ConnectionResetError("peer went away")

    with pytest.raises(ConnectionResetError):
        store.write_blob(chunks())
    assert stored_files(store) == []


def test_rewriting_a_blob_is_harmless(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    store.write_blob(DATA)
    assert store.write_blob(DATA, expected_digest=DIGEST) == DIGEST
    assert store.read_blob(DIGEST) == DATA


def test_a_crash_mid_write_leaves_only_an_uncounted_temp_file(tmp_path: Path) -> None:
    # A real crash: the writer process dies (os._exit) between two chunks.
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from runtime.content import ContentStore
        def chunks():
            yield b"half of it"
            os._exit(3)
        ContentStore(Path({str(tmp_path)!r})).write_blob(chunks())
    """)
    assert subprocess.run([sys.executable, "-c", script], check=False).returncode == 3
    store = ContentStore(tmp_path)
    leftovers = stored_files(store)
    assert len(leftovers) == 1 and leftovers[0].startswith(".tmp-")
    assert list(store.digests()) == []
    assert not store.has("sha256:" + hashlib.sha256(b"half of it").hexdigest())
    assert store.gc_temp(older_than_s=3600) == []          # too young to be stale
    assert [p.name for p in store.gc_temp()] == leftovers
    assert stored_files(store) == []


def test_gc_temp_keeps_blobs(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    store.write_blob(DATA)
    stale = tmp_path / "blobs/sha256/.tmp-dead"
    stale.write_bytes(b"x")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    assert store.gc_temp(older_than_s=3600) == [stale]
    assert store.has(DIGEST)


@pytest.mark.parametrize("digest", ["sha256:../../../etc/passwd", "sha256:" + "a" * 63, "blob", "md5:" + "a" * 32])
def test_malformed_digests_never_become_paths(tmp_path: Path, digest: str) -> None:
    store = ContentStore(tmp_path)
    with pytest.raises(ContentError):
        store.blob_path(digest)
    with pytest.raises(ContentError):
        store.write_blob(DATA, expected_digest=digest)


def test_missing_blobs(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    with pytest.raises(BlobNotFound, match="no blob sha256:"):
        store.open_blob(DIGEST)
    with pytest.raises(BlobNotFound):
        store.size(DIGEST)
    assert not store.has(DIGEST)
    assert store.delete_blob(DIGEST) is False
    store.write_blob(DATA)
    assert store.delete_blob(DIGEST) is True
    assert not store.has(DIGEST)
