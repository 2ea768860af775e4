"""Writing an output into a directory: whole sets, never a mix, never over someone else's files.

``write_output`` is the last step of ``patcher apply`` (and of ``verify``): the files go into
``--out`` through :mod:`patcher.deploy.atomicdir`, and patcher's own files are told from the
user's by their notice (:func:`is_own_file`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from patcher.deploy import atomicdir
from patcher.errors import UsageError
from patcher.series.contract import ALL_OUTPUT_FILES, COMPANIONS, NOTICE_MARK
from patcher.upstream.fetch import Upstream


def default_out_dir(upstream: Upstream) -> Path:
    """``build/transformers-<version>/`` (gemma), ``build/<model>/transformers-<version>/`` (others)."""
    base = Path("build") if not upstream.family.pins_subdir else Path("build") / upstream.family.name
    return base / f"transformers-{upstream.version or 'local'}"


#: sha256 of the ``quantization_vacc.py`` files patcher shipped before the companion carried
#: its notice: still patcher's own, so that outputs of those versions are replaced, not refused.
LEGACY_COMPANIONS = frozenset(
    {
        "481f7d6177d0b026d014173f43c5d37db5297cbab835afc9792c4f3372171c9f",
        "7d13993a4b53ce31fc190fd1f149e1a59e7ae93c90581511aa6b0dce223fb611",
    }
)
#: Entries of an output directory that Python, not the user, makes from patcher's files.  They
#: are not patcher's either, so they are carried over into the new directory, never dropped.
CARRIED = ("__pycache__",)


def is_own_file(path: Path) -> bool:
    """Whether ``path`` is a file patcher wrote: one of its names, carrying its notice (or a
    companion of an earlier version, recognised by digest)."""
    if path.name not in ALL_OUTPUT_FILES or path.is_symlink() or not path.is_file():
        return False
    if NOTICE_MARK in _head(path):
        return True
    if path.name in COMPANIONS:
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest() in LEGACY_COMPANIONS
        except OSError:
            return False
    return False


def _foreign_files(directory: Path) -> list[str]:
    """Entries of ``directory`` that patcher did not write (``__pycache__`` aside: it is kept)."""
    return [
        path.name
        for path in sorted(directory.iterdir())
        if not (path.name in CARRIED and path.is_dir() and not path.is_symlink()) and not is_own_file(path)
    ]


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


def _make_parents(path: Path) -> list[Path]:
    """Create the missing parents of ``path``; the ones created, outermost first."""
    missing = []
    for ancestor in path.parents:
        if ancestor.exists():
            break
        missing.append(ancestor)
    created: list[Path] = []
    try:
        for directory in reversed(missing):
            try:
                directory.mkdir()
            except FileExistsError:  # made by a concurrent run meanwhile: not ours to remove
                continue
            created.append(directory)
    except BaseException:
        _remove_empty(created)
        raise
    return created


def _remove_empty(directories: list[Path]) -> None:
    """Remove the directories a failed write created, innermost first, if still empty."""
    for directory in reversed(directories):
        try:
            directory.rmdir()
        except OSError:
            return  # not empty (somebody else's files) or gone: leave it and its parents


def _holds_cwd(directory: Path) -> bool:
    try:
        cwd = Path.cwd().resolve()
    except OSError:
        return False
    return cwd == directory or directory in cwd.parents


def _read_only(directory: Path) -> bool:
    """Whether the user made ``directory`` read-only (no write bit, or no write access)."""
    try:
        mode = directory.stat().st_mode
    except OSError:
        return False
    return mode & 0o222 == 0 or not os.access(directory, os.W_OK)


def write_output(files: dict[str, str], out_dir: Path, *, force: bool = False) -> None:
    """Write ``files`` into ``out_dir`` so that readers see the old set or the new, never a mix.

    The files are written to a hidden sibling directory which then takes the place of
    ``out_dir`` in one step (:mod:`patcher.deploy.atomicdir`); leftovers of an interrupted earlier
    write are cleaned up first, and ``__pycache__`` is carried over.  A directory holding
    files patcher did not write is refused unless ``force``; with ``force`` those files are
    kept, and patcher's files are replaced one by one beside them (each file whole).  The
    same happens when ``out_dir`` is the current directory or holds it, which a swap would
    pull away from under the shell.  A read-only ``out_dir`` is refused.  When the write
    fails, the parent directories it created are removed again.
    """
    shown = Path(out_dir)
    target = Path(os.path.realpath(shown))  # a symlinked --out: replace the directory it points to
    created: list[Path] = []
    try:
        atomicdir.recover(target, tuple(ALL_OUTPUT_FILES))
        if target.exists() and not target.is_dir():
            raise UsageError(f"--out {shown} is a file, not a directory; choose another --out")
        in_place, foreign = False, []
        if target.is_dir():
            if _read_only(target):
                raise UsageError(
                    f"--out {shown} is read-only; make it writable (chmod u+w) or choose another --out"
                )
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
            created = _make_parents(target)
        if in_place:  # patcher's files of an earlier run that this one does not write go too
            stale = [
                n for n in ALL_OUTPUT_FILES if n not in files and n not in foreign and (target / n).is_file()
            ]
            atomicdir.replace_files(target, files, remove=stale)
        else:
            atomicdir.replace_directory(target, files, carry=CARRIED)
    except OSError as exc:
        _remove_empty(created)
        where = exc.filename or target
        raise UsageError(f"cannot write {shown} ({where}: {exc.strerror}); choose another --out") from None
    except BaseException:
        _remove_empty(created)
        raise
