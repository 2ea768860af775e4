"""What the series reads and writes: upstream file names and their outputs, the notice mark,
a codemod's report, an output, and the digests of the code that makes outputs.

The bottom layer of ``patcher.series``: ``engine`` (running the series), ``notice``,
``generate`` (one release) and ``reuse`` (the output cache) build on it, and it imports none
of them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import patches
from patcher.upstream.families import FAMILIES, Family
from patcher.upstream.fetch import Upstream

PATCHES_DIR = Path(patches.__file__).resolve().parent
COMPANION_DIR = PATCHES_DIR / "companion"
#: The canonical family's (gemma's) upstream files and outputs: the names the codemods use.
MODELING = "modeling_gemma.py"
CONFIGURATION = "configuration_gemma.py"
OUTPUT_NAMES = {MODELING: "modeling_gemma_vacc.py", CONFIGURATION: "configuration_gemma_vacc.py"}
COMPANIONS = ("quantization_vacc.py",)
OUTPUT_FILES = (*OUTPUT_NAMES.values(), *COMPANIONS)
#: Every file patcher writes, for any family (how it recognises its own files).
ALL_OUTPUT_FILES = (*(n for f in FAMILIES.values() for n in f.output_names.values()), *COMPANIONS)


def output_files(fam: Family) -> tuple[str, ...]:
    """The files one output of family ``fam`` consists of."""
    return (*fam.output_names.values(), *COMPANIONS)


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


#: patcher's own modules that shape an output (the runner, the notice), beside this one.
RUNNER = ("contract.py", "engine.py", "aliasing.py", "notice.py", "generate.py", "reuse.py")


#: directory -> (series digest, output digest), taken once per process: the code that runs is
#: the code imported then, so files edited while a long run goes on must not give its outputs
#: a key they do not match.
_DIGESTS: dict[Path, tuple[str, str]] = {}


def series_digest(directory: Path = PATCHES_DIR) -> str:
    """sha256 over the codemods: every module of ``patches/``, the series file and the
    companion files, as they were when this process first asked (``engine.load_series`` asks
    before it imports the codemods).

    The lock records it: which codemods wrote it.  patcher's own modules are not in it, so that
    reorganising patcher (which changes no output) leaves the lock as it is."""
    return _digests(directory)[0]


def output_digest(directory: Path = PATCHES_DIR) -> str:
    """:func:`series_digest` together with patcher's modules that run the series and write the
    notice (:data:`RUNNER`): the part of a cached output's key that says which code made it, so
    that a change to the runner, not only to a codemod, makes every cached output stale."""
    return _digests(directory)[1]


def _digests(directory: Path) -> tuple[str, str]:
    directory = Path(directory).resolve()
    if directory not in _DIGESTS:
        codemods = _series_digest(directory)
        _DIGESTS[directory] = (codemods, _output_digest(codemods))
    return _DIGESTS[directory]


def _series_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    series = [directory / f.series for f in FAMILIES.values() if (directory / f.series).exists()]
    series = series if directory / "series" in series else [directory / "series", *series]
    paths = sorted([*directory.glob("*.py"), *series, *(directory / "companion").glob("*.py")])
    for path in paths:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _output_digest(codemods: str) -> str:
    digest = hashlib.sha256(codemods.encode() + b"\0")
    here = Path(__file__).resolve().parent
    for name in RUNNER:
        digest.update(name.encode() + b"\0" + (here / name).read_bytes() + b"\0")
    return digest.hexdigest()
