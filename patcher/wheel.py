"""Reading the upstream Gemma files out of a transformers wheel.

A wheel is a zip; we read the two members we need as bytes (no newline translation, no
decoding) so that their sha256 is the digest of exactly what the wheel ships.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

from patcher.errors import UpstreamError

MODELING = "modeling_gemma.py"
CONFIGURATION = "configuration_gemma.py"
GEMMA_FILES = (CONFIGURATION, MODELING)
GEMMA_DIR = "transformers/models/gemma"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (wheels are tens of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_gemma_files(wheel: Path) -> dict[str, bytes]:
    """``{"configuration_gemma.py": bytes, "modeling_gemma.py": bytes}`` from a wheel."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
            found = {}
            for name in GEMMA_FILES:
                member = f"{GEMMA_DIR}/{name}"
                if member not in names:
                    raise UpstreamError(
                        f"wheel {wheel.name} has no {member}; Gemma needs transformers >= 4.38"
                    )
                found[name] = archive.read(member)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UpstreamError(f"wheel {wheel.name} is not a readable zip ({exc}); fetch it again") from exc
    return found
