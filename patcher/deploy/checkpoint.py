"""Installing the vacc files into a model checkpoint directory (SPEC §4, issue 4).

A checkpoint loads the vacc code through ``trust_remote_code`` when it holds the three
generated files and its ``config.json`` has the ``auto_map`` of SPEC §4.  This module does
that edit and nothing else:

- ``config.json`` is edited as *text*: the ``auto_map`` member is inserted (or its value
  replaced) and every other byte stays as it was — key order, indentation, number spelling,
  newline style.  Re-serialising would rewrite ``1e-06`` or re-sort keys and turn a one-line
  change into a noisy diff.  Where the other keys are sorted (as ``save_pretrained`` writes
  them) ``auto_map`` goes to its sorted place, so a later ``save_pretrained`` moves nothing;
- the original ``config.json`` is kept once as ``config.json.orig`` and never overwritten;
- files are only written when their content changes, so re-running changes nothing;
- every new file is written to a temporary sibling first; only when all are on disk are
  they renamed into place, ``config.json`` last: an interruption leaves the checkpoint
  loading either as before or with the new files, never a half-written file;
- a ``.py`` file of the same name that patcher did not generate is refused unless ``force``.

This file imports only the standard library on purpose: the verification script, which runs
in a release's own environment without patcher, loads it by path to install exactly the way
``patcher install`` does.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

CONFIG = "config.json"
BACKUP = "config.json.orig"
AUTO_MAP = {
    "AutoConfig": "configuration_gemma_vacc.GemmaConfig",
    "AutoModel": "modeling_gemma_vacc.GemmaForCausalLM",
    "AutoModelForCausalLM": "modeling_gemma_vacc.GemmaForCausalLM",
}
MODEL_TYPE = "gemma"
_WS = " \t\r\n"


class CheckpointError(Exception):
    """The directory cannot take the files as asked; the message says why and what to do."""


@dataclass
class Installed:
    """What :func:`install` did: files written and left alone, and the backup if made."""

    directory: Path
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    backup: Path | None = None

    @property
    def changed(self) -> bool:
        return bool(self.written)


# -- config.json as text -----------------------------------------------------------------------
@dataclass(frozen=True)
class _Member:
    key: str
    key_start: int
    key_end: int
    value_start: int
    value_end: int


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WS:
        pos += 1
    return pos


def _members(text: str) -> tuple[int, list[_Member]]:
    """The top-level object's members with their offsets, and the offset of its ``}``."""
    decoder = json.JSONDecoder()
    pos = _skip(text, 0)
    if text[pos : pos + 1] != "{":
        raise ValueError("not a JSON object")
    pos = _skip(text, pos + 1)
    members: list[_Member] = []
    while text[pos : pos + 1] != "}":
        if members:
            if text[pos : pos + 1] != ",":
                raise ValueError(f"expected ',' at offset {pos}")
            pos = _skip(text, pos + 1)
        if text[pos : pos + 1] != '"':
            raise ValueError(f"expected a key at offset {pos}")
        key, key_end = json.decoder.scanstring(text, pos + 1)
        colon = _skip(text, key_end)
        if text[colon : colon + 1] != ":":
            raise ValueError(f"expected ':' at offset {colon}")
        value_start = _skip(text, colon + 1)
        _, value_end = decoder.raw_decode(text, value_start)
        members.append(_Member(key, pos, key_end, value_start, value_end))
        pos = _skip(text, value_end)
    return pos, members


def _line_indent(text: str, pos: int) -> str | None:
    """The whitespace before ``pos`` on its line, or None when ``pos`` is not first on its line."""
    start = text.rfind("\n", 0, pos) + 1
    indent = text[start:pos]
    return indent if indent.strip(" \t") == "" else None


def _item_gap(text: str, members: list[_Member], indent: str | None, newline: str) -> str:
    """The whitespace the file puts after the comma between two members."""
    if len(members) >= 2:
        between = text[members[0].value_end : members[1].key_start]
        return between[between.index(",") + 1 :]
    return newline + indent if indent is not None else " "


def _insert(text: str, members: list[_Member], member: str, gap: str) -> str:
    """``member`` inserted at its sorted place when the keys are sorted, else last."""
    keys = [m.key for m in members]
    place = sum(k < "auto_map" for k in keys) if keys == sorted(keys) else len(keys)
    if place == len(members):
        end = members[-1].value_end
        return text[:end] + "," + gap + member + text[end:]
    start = members[place].key_start
    return text[:start] + member + "," + gap + text[start:]


def with_auto_map(text: str, auto_map: Mapping[str, str] = AUTO_MAP, *, force: bool = False) -> str:
    """``config.json``'s text with ``auto_map`` merged in; the same text when already there.

    Entries of an existing ``auto_map`` that name other classes (say
    ``AutoModelForSequenceClassification``) are kept.  One of ours mapped to a different
    class is somebody else's remote code: refused unless ``force``.
    """
    data = json.loads(text)
    if not isinstance(data, dict):
        raise CheckpointError("config.json does not hold a JSON object")
    existing = data.get("auto_map")
    if existing is not None and not isinstance(existing, dict):
        if not force:
            raise CheckpointError(
                "config.json has an auto_map that is not an object; pass --force to replace it"
            )
        existing = None
    merged = dict(existing or {})
    others = sorted(k for k, v in auto_map.items() if merged.get(k, v) != v)
    if others and not force:
        raise CheckpointError(
            f"config.json's auto_map maps {', '.join(others)} to other code "
            f"({merged[others[0]]}); pass --force to point it at the vacc files"
        )
    merged.update(auto_map)
    if merged == existing:
        return text
    if list(existing or ()) == sorted(existing or ()):  # keep a sorted auto_map sorted
        merged = dict(sorted(merged.items()))
    close, members = _members(text)
    newline = "\r\n" if "\r\n" in text else "\n"
    first = members[0] if members else None
    indent = _line_indent(text, first.key_start) if first else None
    key_sep = text[first.key_end : first.value_start] if first else ": "
    if indent is not None:
        value = json.dumps(merged, indent=indent, separators=(",", key_sep)).replace("\n", newline + indent)
    else:
        value = json.dumps(merged, separators=(", ", key_sep))
    found = next((m for m in members if m.key == "auto_map"), None)
    if found is not None:
        out = text[: found.value_start] + value + text[found.value_end :]
    elif not members:
        out = text[:close] + '"auto_map"' + key_sep + value + text[close:]
    else:
        out = _insert(
            text, members, '"auto_map"' + key_sep + value, _item_gap(text, members, indent, newline)
        )
    if json.loads(out) != {**data, "auto_map": merged}:  # the text edit must mean exactly this
        raise CheckpointError("config.json has a layout patcher cannot edit safely; add auto_map by hand")
    return out


def read_config(directory: Path) -> str:
    """``config.json``'s text, refused unless it is a readable JSON object."""
    path = Path(directory) / CONFIG
    fix = "give the directory save_pretrained wrote, whose config.json is a JSON object"
    if not Path(directory).is_dir():
        raise CheckpointError(f"{directory} is not a directory; give the checkpoint directory with --weights")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{directory} has no {CONFIG}; {fix}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}; {fix}") from None
    try:
        text = raw.decode("utf-8")
        if not isinstance(json.loads(text), dict):
            raise ValueError("not an object")
    except RecursionError:
        raise CheckpointError(f"{path} is not a readable JSON object (nested too deeply); {fix}") from None
    except ValueError as exc:
        reason = " ".join(str(exc).split())  # one line, whatever the decoder says
        raise CheckpointError(f"{path} is not a readable JSON object ({reason}); {fix}") from None
    return text


def check_model_type(text: str, *, force: bool = False, expected: str = MODEL_TYPE) -> None:
    """Refuse a checkpoint of another model (``model_type`` other than ``expected``, gemma by
    default) unless ``force``."""
    model_type = json.loads(text).get("model_type")
    if model_type not in (None, expected) and not force:
        raise CheckpointError(
            f"config.json says model_type {model_type!r}, not {expected!r}; pass --force to install anyway"
        )


def auto_map_for(model_type: str, prefix: str) -> dict[str, str]:
    """The ``auto_map`` of a family's vacc files (``AUTO_MAP`` is gemma's)."""
    return {
        "AutoConfig": f"configuration_{model_type}_vacc.{prefix}Config",
        "AutoModel": f"modeling_{model_type}_vacc.{prefix}ForCausalLM",
        "AutoModelForCausalLM": f"modeling_{model_type}_vacc.{prefix}ForCausalLM",
    }


# -- the files ---------------------------------------------------------------------------------
def _is_ours(existing: str, new: str, mark: str | None, known: frozenset[str] = frozenset()) -> bool:
    """A file patcher wrote: the same bytes as now, carrying the generated-file notice, or one
    of the ``known`` digests (files patcher wrote before they carried the notice)."""
    if existing == new or (mark is not None and mark in existing[:8192]):
        return True
    return hashlib.sha256(existing.encode("utf-8")).hexdigest() in known


def _read_text(path: Path) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None


def _stage(directory: Path, name: str, text: str, mode: int) -> Path:
    """``text`` written beside ``name`` as ``.NAME.new-PID-TOKEN`` (the PID lets a later run
    tell a dead install's leftovers from a running one's)."""
    tmp = directory / f".{name}.new-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(tmp, "x", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


#: A staged file of a run that was killed: ``.NAME.new-PID-TOKEN``, or ``.NAME.XXXXXXXX.tmp``
#: as patcher named them before it put the PID in (those are recovered once a minute old).
_LEFTOVER = re.compile(r"\.(?P<name>.+?)\.(?:new-(?P<pid>\d+)-[0-9a-f]+|[a-z0-9_]{8}\.tmp)")
_OLD_LEFTOVER_AGE = 60.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # somebody else's process, or cannot tell: leave its files alone
    return True


def recover(directory: Path, names: Iterable[str]) -> list[Path]:
    """Delete what killed installs staged in ``directory`` for ``names``; the files deleted."""
    wanted, removed = set(names), []
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return removed
    for path in entries:
        match = _LEFTOVER.fullmatch(path.name)
        if not match or match["name"] not in wanted or not path.is_file() or path.is_symlink():
            continue
        if match["pid"] is not None:
            dead = not _alive(int(match["pid"]))
        else:
            try:
                dead = time.time() - path.stat().st_mtime > _OLD_LEFTOVER_AGE
            except OSError:
                continue
        if dead:
            try:
                path.unlink()
            except OSError:
                continue
            removed.append(path)
    return removed


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def install(
    directory: Path,
    files: Mapping[str, str],
    *,
    force: bool = False,
    mark: str | None = None,
    known: frozenset[str] = frozenset(),
    auto_map: Mapping[str, str] = AUTO_MAP,
    model_type: str = MODEL_TYPE,
) -> Installed:
    """Put ``files`` (name -> text) into ``directory`` and the ``auto_map`` into its config.json.

    ``mark`` is the text that identifies a file patcher generated (its notice); an existing
    file of one of these names without it, and different from the new text, is refused
    unless ``force``.
    """
    directory = Path(directory)
    config_text = read_config(directory)
    check_model_type(config_text, force=force, expected=model_type)
    new_config = with_auto_map(config_text, auto_map, force=force)
    recover(directory, [*files, CONFIG, BACKUP])
    result = Installed(directory)
    plan: dict[str, str] = {}
    for name, text in files.items():
        existing = _read_text(directory / name)
        if existing == text:
            result.unchanged.append(name)
            continue
        if existing is not None and not force and not _is_ours(existing, text, mark, known):
            raise CheckpointError(
                f"{directory / name} was not generated by patcher; move it away or pass --force to replace it"
            )
        plan[name] = text
    if new_config != config_text:
        plan[CONFIG] = new_config
    else:
        result.unchanged.append(CONFIG)
    backup = directory / BACKUP
    make_backup = CONFIG in plan and not backup.exists()
    staged: dict[str, Path] = {}
    try:
        mode = _default_mode()
        for name, text in plan.items():
            target = directory / name
            keep = os.stat(target).st_mode & 0o7777 if target.exists() else mode
            staged[name] = _stage(directory, name, text, keep)
        if make_backup:
            original_mode = os.stat(directory / CONFIG).st_mode & 0o7777
            staged[BACKUP] = _stage(directory, BACKUP, config_text, original_mode)
        # everything is on disk: rename into place, the backup first and config.json last
        order = [n for n in (BACKUP, *files) if n in staged] + [n for n in (CONFIG,) if n in staged]
        for name in order:
            os.replace(staged.pop(name), directory / name)
    except OSError as exc:
        raise CheckpointError(f"cannot write into {directory}: {exc.strerror}") from None
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
    result.written = [n for n in (*files, CONFIG) if n in plan]
    result.backup = backup if make_backup else None
    return result
