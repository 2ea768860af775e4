"""Content-addressed blob cache for upstream files.

A blob's file name is the sha256 of its content, so an entry can always be checked against
its name: a damaged entry (truncated, edited, half-written by a crash) is detected on read,
deleted, and reported as missing so that the caller fetches it again.  Writes go through a
temporary file and ``os.replace``, so readers never see a partial blob, and concurrent
writers of the same blob are harmless (they write the same bytes).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import platformdirs

from patcher.errors import UpstreamError

_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_sha256(value: object) -> bool:
    """Whether ``value`` is a lowercase hex sha256: the only thing a blob may be named.

    Digests come from files anyone can edit (pins, the lock, output-cache records); one that
    is not a digest must never become a path (``../../victim`` would name a file elsewhere).
    """
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``: the digest format of pins and blob names."""
    return hashlib.sha256(data).hexdigest()


def cache_root() -> Path:
    """The cache directory: ``$PATCHER_CACHE_DIR`` if set, else the user cache dir."""
    return Path(os.environ.get("PATCHER_CACHE_DIR") or platformdirs.user_cache_dir("patcher"))


class BlobCache:
    """Blobs under ``<root>/blobs/<sha256>``; ``root`` defaults to :func:`cache_root`."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_root()
        self.blobs = self.root / "blobs"

    def path(self, sha256: str) -> Path:
        """Where the blob with this digest lives (whether or not it exists).

        Raises ValueError for anything but a sha256: callers validate what they read first
        and say where it came from; this is the last line of defence.
        """
        if not is_sha256(sha256):
            raise ValueError(f"{str(sha256)[:80]!r} is not a sha256 digest")
        return self.blobs / sha256

    def get(self, sha256: str) -> bytes | None:
        """The blob's bytes, or None when absent or damaged.

        A damaged blob is deleted when the cache can be written; a read-only cache keeps it
        and the caller fetches the file again all the same.
        """
        path = self.path(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UpstreamError(
                f"cannot read cache entry {path}: {exc.strerror}; delete it or set PATCHER_CACHE_DIR"
            ) from exc
        if sha256_bytes(data) != sha256:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass  # a read-only cache: the damaged entry stays, unused
            return None
        return data

    def put(self, data: bytes) -> str:
        """Store ``data`` atomically and return its sha256 (the blob's name)."""
        digest = sha256_bytes(data)
        target = self.path(digest)
        try:
            self.blobs.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.blobs, prefix=f".{digest[:16]}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise UpstreamError(
                f"cannot write the cache at {self.root}: {exc.strerror}; "
                "make it writable or set PATCHER_CACHE_DIR to a writable directory"
            ) from exc
        return digest
