"""Reading the upstream Gemma files out of a transformers wheel.

A wheel is a zip; we read the two members we need as bytes (no newline translation, no
decoding) so that their sha256 is the digest of exactly what the wheel ships.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

from patcher.errors import UpstreamError
from patcher.upstream.families import Family, family

MODELING = "modeling_gemma.py"
CONFIGURATION = "configuration_gemma.py"
GEMMA_FILES = (CONFIGURATION, MODELING)
GEMMA_DIR = "transformers/models/gemma"

#: The largest upstream file patcher reads.  Upstream Gemma files are 20-70 KB; the series'
#: time and memory grow with the file (about 35 s and 500 MB for 1 MiB), so anything larger
#: is refused before it is parsed rather than left to exhaust the machine.
MAX_UPSTREAM_BYTES = 1 << 20


def check_size(size: int, where: str, error: type[Exception] = UpstreamError) -> None:
    """Refuse an upstream file over :data:`MAX_UPSTREAM_BYTES`, in one line."""
    if size > MAX_UPSTREAM_BYTES:
        raise error(
            f"{where} is {size:,} bytes; patcher reads upstream files of at most 1 MiB "
            "(upstream Gemma files are about 60 KB)"
        )


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (wheels are tens of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_gemma_files(wheel: Path, model: Family | str | None = None) -> dict[str, bytes]:
    """``{"configuration_gemma.py": bytes, "modeling_gemma.py": bytes}`` from a wheel (the
    files of another family with ``model``)."""
    fam = family(model)
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
            found = {}
            for name in fam.files:
                member = f"{fam.upstream_dir}/{name}"
                if member not in names:
                    raise UpstreamError(
                        f"wheel {wheel.name} has no {member}; {fam.prefix} needs transformers >= {fam.first}"
                    )
                check_size(archive.getinfo(member).file_size, f"{member} in wheel {wheel.name}")
                found[name] = archive.read(member)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UpstreamError(f"wheel {wheel.name} is not a readable zip ({exc}); fetch it again") from exc
    return found
