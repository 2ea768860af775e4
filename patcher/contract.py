"""What the series reads and writes: the upstream file names and their outputs, the patches
directory, the notice mark, a codemod's report, an output, and the digest that keys every
output.

The bottom layer of output making: ``engine`` (running the series), ``generate`` (one
release) and ``outputs`` (reuse and writing) all build on it, and it imports none of them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import patches
from patcher.upstream import Upstream

PATCHES_DIR = Path(patches.__file__).resolve().parent
COMPANION_DIR = PATCHES_DIR / "companion"
MODELING = "modeling_gemma.py"
CONFIGURATION = "configuration_gemma.py"
OUTPUT_NAMES = {MODELING: "modeling_gemma_vacc.py", CONFIGURATION: "configuration_gemma_vacc.py"}
COMPANIONS = ("quantization_vacc.py",)
OUTPUT_FILES = (*OUTPUT_NAMES.values(), *COMPANIONS)
NOTICE_MARK = patches.NOTICE_MARK
_NOTICE_RELEASE = re.compile(r"^" + re.escape(NOTICE_MARK) + r" from transformers (\S+);", re.M)


def notice_release(text: str) -> str | None:
    """The release a generated file's notice names (None: no notice, or a local upstream's)."""
    hit = _NOTICE_RELEASE.search(text)
    return hit.group(1) if hit else None


@dataclass(frozen=True)
class Report:
    """One codemod's effect on one file: the shapes it met and the lines it changed."""

    codemod: str
    file: str
    shapes: tuple[str, ...]
    added: int
    removed: int


@dataclass
class Output:
    """The generated files of one release (name -> source) and the codemods' reports."""

    upstream: Upstream
    files: dict[str, str]
    reports: list[Report] = field(default_factory=list)

    def digests(self) -> dict[str, str]:
        return {name: hashlib.sha256(text.encode()).hexdigest() for name, text in self.files.items()}


#: patcher's own modules that shape an output (the runner, the notice).
_GENERATORS = ("contract.py", "engine.py", "generate.py", "outputs.py")


#: directory -> digest, taken once per process: the code that runs is the code imported then,
#: so files edited while a long run goes on must not give its outputs a key they do not match.
_DIGESTS: dict[Path, str] = {}


def series_digest(directory: Path = PATCHES_DIR) -> str:
    """sha256 over every codemod source, the series file, the companion files and the
    modules of patcher that run them, as they were when this process first asked
    (``engine.load_series`` asks before it imports the codemods)."""
    directory = Path(directory).resolve()
    if directory not in _DIGESTS:
        _DIGESTS[directory] = _series_digest(directory)
    return _DIGESTS[directory]


def _series_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    paths = sorted([*directory.glob("*.py"), directory / "series", *(directory / "companion").glob("*.py")])
    for path in [*paths, *(here / name for name in _GENERATORS)]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
