"""Replacing a directory's files so that a reader, or a crash, sees the old set or the new.

:func:`replace_directory` writes the new files into a hidden sibling
(``.<name>.new-<pid>-<token>``), flushes them to disk, and only then puts that directory in
the place of the old one.  On Linux the two directories are swapped in one step
(``renameat2(RENAME_EXCHANGE)``), so the path always holds a complete set.  Where that call is
missing, the old directory is first renamed aside (``.<name>.old-<pid>-<token>``) and the new
one renamed in: a crash between those two renames leaves no directory at the path, only the
old set beside it, and :func:`recover` — run before every write — renames it back.  Leftovers
of dead processes (a half-written ``.new-`` sibling, an ``.old-`` one not yet deleted) are
removed by :func:`recover` too; those of running processes are left alone.  Two runs
creating the same absent directory at once both succeed: the later one replaces the earlier
one's set like any old set.  A name too long to fit in a staging name is shortened there
(with a digest, so that :func:`recover` still finds it).  Entries named in ``carry`` (Python's
``__pycache__``) are copied into the new directory, so the swap removes nothing.

:func:`replace_files` is for a directory that also holds files that are not ours: each file
is staged beside its final name and renamed over it, so every file is whole, but the set is
replaced file by file, and the other files are never touched.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>new|old)-(?P<pid>\d+)-[0-9a-f]+")


@functools.cache
def _renameat2():
    """libc's ``renameat2`` (glibc 2.28+), or None (other systems: the fallback swap is used)."""
    import ctypes
    import ctypes.util

    try:
        function = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def exchange(a: Path, b: Path) -> bool:
    """Swap the directories at ``a`` and ``b`` in one step; False where the system cannot."""
    import ctypes

    function = _renameat2()
    if function is None:
        return False
    if function(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # an old kernel, or a file system without it
    raise OSError(code, os.strerror(code), str(a))


#: Longest name kept whole in a staging name: ``.<name>.new-<pid>-<token>`` must stay within
#: the 255 bytes a file name may have, so a longer name is shortened (and made unique by digest).
_NAME_ROOM = 200


def _staged_name(name: str) -> str:
    """``name`` as it appears in staging names: itself, or a unique shortening of a long one."""
    if len(os.fsencode(name)) <= _NAME_ROOM:
        return name
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    return os.fsdecode(os.fsencode(name)[:100]) + "~" + digest


def _sibling(target: Path, kind: str) -> Path:
    return target.parent / f".{_staged_name(target.name)}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # somebody else's process, or cannot tell: leave its files alone
    return True


def _leftovers(directory: Path, names: set[str]) -> list[Path]:
    """Entries of ``directory`` staged for one of ``names`` by writers that died, oldest first."""
    found = []
    staged = {_staged_name(name) for name in names}
    try:
        entries = list(directory.iterdir())
    except OSError:
        return []
    for path in entries:
        match = _LEFTOVER.fullmatch(path.name)
        if match and match["name"] in staged and not _alive(int(match["pid"])):
            try:
                found.append((path.lstat().st_mtime, path.name, path))
            except FileNotFoundError:
                continue  # removed meanwhile
    return [path for *_, path in sorted(found)]


def recover(target: Path, names: tuple[str, ...] = ()) -> bool:
    """Clean up after writers of ``target`` that died; True when the old set was put back.

    A missing ``target`` with an ``.old-`` sibling is a crash between the two renames of the
    fallback swap: the old set is renamed back.  Every other leftover is deleted: staged
    siblings, and files staged inside ``target`` for ``names`` by :func:`replace_files`.
    """
    restored = False
    stale = _leftovers(target.parent, {target.name})
    if not target.exists():
        old = [p for p in stale if ".old-" in p.name]
        if old:
            os.rename(old[-1], target)
            restored = True
            stale.remove(old[-1])
    if target.is_dir():
        stale += _leftovers(target, set(names))
    for path in stale:
        remove_tree(path)
    return restored


def remove_tree(path: Path) -> None:
    """Delete a staged directory of ours, even one holding a read-only set (a read-only old
    directory swapped out); errors are ignored, and nothing outside ``path`` is touched."""
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    root = os.fspath(path)

    def writable_and_retry(function, name, _exc) -> None:
        parent = os.path.dirname(name)
        if name == root or not (parent == root or parent.startswith(root + os.sep)):
            return
        try:
            os.chmod(parent, 0o700)
            function(name)
        except OSError:
            pass

    try:
        os.chmod(path, 0o700)
    except OSError:
        pass
    shutil.rmtree(path, onerror=writable_and_retry)


def _write_file(path: Path, text: str) -> None:
    with open(path, "x", encoding="utf-8", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory; the rename is still atomic
    finally:
        os.close(fd)


def _dir_mode(target: Path) -> int:
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o777 & ~umask


def _carry(target: Path, staging: Path, names: Iterable[str]) -> None:
    """Copy the entries ``names`` of ``target`` (say ``__pycache__``) into ``staging``, as hard
    links where the file system allows, so that the swap keeps them."""
    for name in names:
        source = target / name
        if source.is_dir() and not source.is_symlink():
            try:
                shutil.copytree(source, staging / name, symlinks=True, copy_function=os.link)
            except (OSError, shutil.Error):
                remove_tree(staging / name)
                shutil.copytree(source, staging / name, symlinks=True)


def _rename_new(staging: Path, target: Path) -> bool:
    """Rename ``staging`` to the absent ``target``; False when a concurrent run made it first."""
    try:
        os.rename(staging, target)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) and target.is_dir():
            return False
        raise
    return True


def replace_directory(target: Path, files: Mapping[str, str], carry: Iterable[str] = ()) -> None:
    """Make ``target`` a directory holding exactly ``files`` (name -> text), atomically, plus
    the entries named in ``carry`` that the old directory had.

    Raises OSError; nothing is left behind then but the old directory, untouched.
    """
    staging = _sibling(target, "new")
    staging.mkdir()
    try:
        for name, text in files.items():
            _write_file(staging / name, text)
        if target.is_dir():
            _carry(target, staging, carry)
        os.chmod(staging, _dir_mode(target))
        _fsync_dir(staging)
        if not target.exists() and _rename_new(staging, target):
            pass  # created
        elif exchange(staging, target):
            pass  # staging now holds the old set
        else:
            old = _sibling(target, "old")
            os.rename(target, old)
            try:
                os.rename(staging, target)
            except BaseException:
                os.rename(old, target)  # put the old set back; a kill here is left to recover()
                raise
            staging = old
        _fsync_dir(target.parent)
    finally:
        remove_tree(staging)


def replace_files(target: Path, files: Mapping[str, str], remove: Iterable[str] = ()) -> None:
    """Write ``files`` into the existing directory ``target``, each one whole (staged beside
    its final name, then renamed over it), then delete the files named in ``remove``; every
    other file there is left alone."""
    staged: dict[str, Path] = {}
    try:
        for name, text in files.items():
            staged[name] = target / f".{name}.new-{os.getpid()}-{secrets.token_hex(4)}"
            _write_file(staged[name], text)
        for name in files:
            os.replace(staged.pop(name), target / name)
        for name in remove:
            (target / name).unlink(missing_ok=True)
        _fsync_dir(target)
    finally:
        for path in staged.values():
            path.unlink(missing_ok=True)
