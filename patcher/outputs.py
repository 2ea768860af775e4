"""Outputs: what one release's generation produced, where it is written, and its reuse.

This module imports no libcst on purpose.  An output depends only on the upstream files,
the codemod sources and the notice (SPEC §8), so it is cached content-addressed under that
key; ``patcher apply`` on a cached output never loads the engine, which is what keeps it
within a small multiple of ``python -c "import libcst"``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import patches
from patcher import atomicdir
from patcher.cache import BlobCache, cache_root
from patcher.errors import UsageError
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


# -- reuse -----------------------------------------------------------------------------------
#: patcher's own modules that shape an output (the runner, the notice).
_GENERATORS = ("engine.py", "generate.py", "outputs.py")


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


def output_key(upstream: Upstream, codemods: list[str] | None) -> str:
    """The key of an output: everything it is a function of."""
    parts = {
        "series": series_digest(),
        "codemods": codemods,
        "version": upstream.version,
        "origin": upstream.origin if upstream.version is None else None,
        "modeling": upstream.modeling_sha256,
        "configuration": upstream.configuration_sha256,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class OutputCache:
    """Generated outputs by key: a small JSON manifest per key, the files as blobs."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or cache_root()) / "outputs"
        self.blobs = BlobCache(root)

    def get(self, key: str, upstream: Upstream) -> Output | None:
        try:
            manifest = json.loads((self.root / f"{key}.json").read_text(encoding="utf-8"))
            files = {}
            for name, sha in manifest["files"].items():
                data = self.blobs.get(sha)  # checked against its digest; damaged -> None
                if data is None:
                    return None
                files[name] = data.decode("utf-8")
            reports = [
                Report(r["codemod"], r["file"], tuple(r["shapes"]), r["added"], r["removed"])
                for r in manifest["reports"]
            ]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return Output(upstream, files, reports)

    def put(self, key: str, output: Output) -> None:
        try:
            files = {name: self.blobs.put(text.encode("utf-8")) for name, text in output.files.items()}
            manifest = {"files": files, "reports": [asdict(r) for r in output.reports]}
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".manifest-")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(manifest, handle, indent=1, sort_keys=True)
            os.replace(tmp, self.root / f"{key}.json")
        except OSError:
            pass  # the cache is an optimisation: failing to fill it must not fail the command


def generate_cached(upstream: Upstream, codemods: list[str] | None = None) -> Output:
    """The output for ``upstream`` (optionally only the named codemods), reused when an
    identical generation is cached; the engine is imported only when it has to run."""
    key = output_key(upstream, codemods)
    cache = OutputCache()
    reuse = os.environ.get("PATCHER_OUTPUT_CACHE", "1") != "0"
    output = cache.get(key, upstream) if reuse else None
    if output is None:
        from patcher import engine
        from patcher.generate import generate

        output = generate(upstream, engine.select(engine.load_series(), codemods))
        cache.put(key, output)
    return output


# -- writing ---------------------------------------------------------------------------------
def default_out_dir(upstream: Upstream) -> Path:
    return Path("build") / f"transformers-{upstream.version or 'local'}"


def _foreign_files(directory: Path) -> list[str]:
    """Files in ``directory`` that patcher did not write."""
    foreign = []
    for path in sorted(directory.iterdir()):
        if path.name == "__pycache__":
            continue
        if path.name not in OUTPUT_FILES or not path.is_file():
            foreign.append(path.name)
        elif path.name in OUTPUT_NAMES.values() and NOTICE_MARK not in _head(path):
            foreign.append(path.name)
    return foreign


def _head(path: Path) -> str:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return handle.read(4096)
    except OSError:
        return ""


def _parent_problem(path: Path) -> str | None:
    """Why ``path`` cannot be created as a directory, judged from its nearest existing ancestor."""
    for ancestor in path.parents:
        if ancestor.exists():
            return None if ancestor.is_dir() else f"{ancestor} is a file, not a directory"
    return None


def _holds_cwd(directory: Path) -> bool:
    try:
        cwd = Path.cwd().resolve()
    except OSError:
        return False
    return cwd == directory or directory in cwd.parents


def write_output(files: dict[str, str], out_dir: Path, *, force: bool = False) -> None:
    """Write ``files`` into ``out_dir`` so that readers see the old set or the new, never a mix.

    The files are written to a hidden sibling directory which then takes the place of
    ``out_dir`` in one step (:mod:`patcher.atomicdir`); leftovers of an interrupted earlier
    write are cleaned up first.  A directory holding files patcher did not write is refused
    unless ``force``; with ``force`` those files are kept, and patcher's files are replaced
    one by one beside them (each file whole).  The same happens when ``out_dir`` is the
    current directory or holds it, which a swap would pull away from under the shell.
    """
    shown = Path(out_dir)
    target = Path(os.path.realpath(shown))  # a symlinked --out: replace the directory it points to
    try:
        atomicdir.recover(target, tuple(OUTPUT_FILES))
        if target.exists() and not target.is_dir():
            raise UsageError(f"--out {shown} is a file, not a directory; choose another --out")
        in_place, foreign = False, []
        if target.is_dir():
            foreign = _foreign_files(target)
            if foreign and not force:
                raise UsageError(
                    f"{shown} holds files patcher did not write ({', '.join(foreign[:3])}"
                    f"{', …' if len(foreign) > 3 else ''}); choose another --out, or pass --force "
                    "to write patcher's files beside them"
                )
            in_place = bool(foreign) or _holds_cwd(target)
        else:
            problem = _parent_problem(target)
            if problem:
                raise UsageError(f"cannot create {shown}: {problem}; choose another --out")
            target.parent.mkdir(parents=True, exist_ok=True)
        if in_place:  # patcher's files of an earlier run that this one does not write go too
            stale = [
                n for n in OUTPUT_FILES if n not in files and n not in foreign and (target / n).is_file()
            ]
            atomicdir.replace_files(target, files, remove=stale)
        else:
            atomicdir.replace_directory(target, files)
    except OSError as exc:
        where = exc.filename or target
        raise UsageError(f"cannot write {shown} ({where}: {exc.strerror}); choose another --out") from None
