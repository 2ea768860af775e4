"""The output lock: ``upstream_pins/lock.json``, what every pinned release generates.

For each pinned release the lock records either the sha256 of each output file plus, per
codemod, a short digest of the lines it wrote (:func:`patcher.series.attribution.contributions`),
or that the release drifts and which codemods drift.  Drift is a normal, recorded state:
the series does not support every pinned release yet, and a change that teaches a codemod a
new shape shows up in the lock as "now generates".  ``series_digest`` says which codemod
sources wrote the lock; it is information for readers, not compared (a refactor of the
runner that changes no output is not a difference).

The file is deterministic (releases in version order, sorted keys inside, indent 1, final
newline) so that the lock diff of a pull request shows exactly the releases that changed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import Version

from patcher.errors import UsageError
from patcher.series.contract import ALL_OUTPUT_FILES
from patcher.upstream.cache import is_sha256
from patcher.upstream.families import family
from patcher.upstream.pins import pins_dir, write_text_atomically
from patcher.upstream.versions import check_release

LOCK_NAME = "lock.json"
FORMAT = 1
_DRIFT_LINE = re.compile(r"^drift: codemod ([\w-]+),", re.MULTILINE)
_CODEMOD = re.compile(r"[a-z][a-z0-9-]{0,63}")
_CONTRIBUTION = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class Entry:
    """One release in the lock: output digests and codemod contributions, or its drift."""

    outputs: dict[str, str] | None = None
    codemods: dict[str, str] | None = None
    drift: tuple[str, ...] | None = None

    def same_as(self, other: Entry) -> bool:
        """Equal outputs, or equal drift; contributions only explain a difference."""
        return self.outputs == other.outputs and self.drift == other.drift

    def to_json(self) -> dict:
        if self.drift is not None:
            return {"drift": list(self.drift)}
        return {
            "outputs": dict(sorted(self.outputs.items())),
            "codemods": dict(sorted(self.codemods.items())),
        }


@dataclass
class Lock:
    """Every locked release, by version, and the series digest that wrote them."""

    releases: dict[str, Entry] = field(default_factory=dict)
    series_digest: str = ""

    def to_json(self) -> str:
        data = {
            "format": FORMAT,
            "about": "Written by `patcher lock`; `patcher check` regenerates every pinned release "
            "and compares. Re-lock in the commit that changes a codemod.",
            "series_digest": self.series_digest,
            "releases": {v: self.releases[v].to_json() for v in sorted(self.releases, key=Version)},
        }
        return json.dumps(data, indent=1) + "\n"


def release_spans(versions: list[str], pinned: list[str]) -> str:
    """``versions`` in short form: runs of consecutive pinned releases as ``first–last``."""
    wanted = set(versions)
    spans: list[list[str]] = []
    previous_in = False
    for version in pinned:
        if version in wanted:
            if previous_in:
                spans[-1].append(version)
            else:
                spans.append([version])
        previous_in = version in wanted
    spans += [[v] for v in versions if v not in pinned]
    return ", ".join(s[0] if len(s) == 1 else f"{s[0]}–{s[-1]}" for s in spans)


def drifting_codemods(error: Exception | str) -> tuple[str, ...]:
    """The codemods a ``DriftError`` (or its message) names, in the order it names them."""
    return tuple(dict.fromkeys(_DRIFT_LINE.findall(str(error))))


def lock_path(directory: Path | None = None, model: str | None = None) -> Path:
    """``lock.json`` beside the pins (``$PATCHER_PINS_DIR`` or ``upstream_pins/``; another
    family's beside its pins, ``upstream_pins/mistral/lock.json``)."""
    return pins_dir(directory, model) / LOCK_NAME


def _lock_command(model: str | None) -> str:
    """``patcher lock`` for the family whose lock it is (``patcher lock --model mistral``)."""
    return f"patcher lock{family(model).option}"


def _bad(path: Path, why: str, model: str | None = None) -> UsageError:
    return UsageError(
        f"{path} is not a valid lock ({why}); restore it from git or run `{_lock_command(model)}`"
    )


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 50 else text[:47] + "…"


def _entry_problem(version: object, raw: object) -> str | None:
    """What is wrong with one release's entry, or None.  Every value that is later used as a
    version, a file name or a digest (a cache path) must be exactly one."""
    try:
        if not isinstance(version, str) or check_release(version) != version:
            return "is not a release version"
    except UsageError:
        return "is not a release version"
    if not isinstance(raw, dict):
        return "is not an object"
    if set(raw) == {"drift"}:
        drift = raw["drift"]
        if not isinstance(drift, list) or not all(
            isinstance(n, str) and _CODEMOD.fullmatch(n) for n in drift
        ):
            return "has a drift that is not a list of codemod names"
        return None
    if set(raw) != {"outputs", "codemods"}:
        return "has neither outputs and codemods nor drift"
    outputs, codemods = raw["outputs"], raw["codemods"]
    if not isinstance(outputs, dict) or not isinstance(codemods, dict):
        return "has outputs or codemods that are not objects"
    for name, digest in outputs.items():
        if name not in ALL_OUTPUT_FILES:
            return f"names an output {_shown(name)} patcher does not write"
        if not is_sha256(digest):
            return f"has {_shown(digest)} for {name}, not a sha256"
    for name, digest in codemods.items():
        if not isinstance(name, str) or not _CODEMOD.fullmatch(name):
            return f"names a codemod {_shown(name)} that is not a codemod name"
        if not isinstance(digest, str) or not _CONTRIBUTION.fullmatch(digest):
            return f"has {_shown(digest)} for codemod {name}, not a 16-digit hex digest"
    return None


def read_lock(path: Path, model: str | None = None) -> Lock:
    """The lock at ``path`` (of the family ``model``, which the messages' ``patcher lock`` names);
    UsageError when it is missing or malformed.

    The lock is a file of the repository, so a pull request can change it: every entry is
    validated before any of its values is used (a digest becomes a cache path).
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"there is no lock at {path}; run `{_lock_command(model)}` to write one") from None
    except RecursionError:
        raise _bad(path, "nested too deeply", model) from None
    except (OSError, ValueError) as exc:
        raise _bad(path, " ".join(str(exc).split()), model) from None
    if (
        not isinstance(data, dict)
        or data.get("format") != FORMAT
        or not isinstance(data.get("releases"), dict)
    ):
        raise _bad(path, f"expected format {FORMAT} with releases", model)
    digest = data.get("series_digest", "")
    if digest != "" and not is_sha256(digest):
        raise _bad(path, f"series_digest {_shown(digest)} is not a sha256", model)
    lock = Lock(series_digest=digest)
    for version, raw in data["releases"].items():
        problem = _entry_problem(version, raw)
        if problem:
            raise _bad(path, f"entry {_shown(version)} {problem}", model)
        if "drift" in raw:
            lock.releases[version] = Entry(drift=tuple(raw["drift"]))
        else:
            lock.releases[version] = Entry(outputs=dict(raw["outputs"]), codemods=dict(raw["codemods"]))
    return lock


def write_lock(lock: Lock, path: Path) -> bool:
    """Write ``lock`` atomically; False (and nothing written) when the file already says it."""
    text = lock.to_json()
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except OSError:
        pass
    write_text_atomically(path, text)
    return True


# -- comparing -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Difference:
    """How one release's regeneration differs from its lock entry.

    ``kind``: ``outputs`` (files differ), ``drift`` (drifts differently), ``now-generates``,
    ``now-drifts``, ``unlocked`` (pinned, not in the lock) or ``unpinned`` (locked, no pin).
    """

    version: str
    kind: str
    files: tuple[str, ...] = ()
    codemods: tuple[str, ...] = ()

    def describe(self) -> str:
        """The difference in words, without the release (shared by a group of releases)."""
        files = ", ".join(self.files)
        what = {
            "outputs": f"{files} differ{'s' if len(self.files) == 1 else ''}",
            "drift": "drifts in other codemods",
            "now-generates": "now generates (locked as drifting)",
            "now-drifts": "now drifts (locked outputs)",
            "unlocked": "is pinned but not in the lock",
            "unpinned": "is in the lock but no longer pinned",
        }[self.kind]
        if self.codemods:
            return f"{what}; codemods: {', '.join(self.codemods)}"
        if self.kind == "outputs":  # every codemod wrote the same lines: the notice or their order
            return f"{what}; no codemod's own lines changed (notice or line order)"
        return what


def compare(locked: Lock, current: dict[str, Entry], order: list[str] | None = None) -> list[Difference]:
    """The differences between the lock and the regenerated entries, in version order.

    ``codemods`` names what concerns each difference: those whose contribution digests
    changed, those that stopped or started drifting, or the codemods now drifting.
    """
    rank = {name: i for i, name in enumerate(order or [])}

    def ordered(names: set[str]) -> tuple[str, ...]:
        return tuple(sorted(names, key=lambda n: (rank.get(n, len(rank)), n)))

    found: list[Difference] = []
    for version in sorted(set(locked.releases) | set(current), key=Version):
        old, new = locked.releases.get(version), current.get(version)
        if old is None:
            found.append(Difference(version, "unlocked"))
        elif new is None:
            found.append(Difference(version, "unpinned"))
        elif old.same_as(new):
            continue
        elif old.drift is not None and new.drift is not None:
            found.append(Difference(version, "drift", codemods=ordered(set(old.drift) ^ set(new.drift))))
        elif old.drift is not None:
            found.append(Difference(version, "now-generates", codemods=ordered(set(old.drift))))
        elif new.drift is not None:
            found.append(Difference(version, "now-drifts", codemods=ordered(set(new.drift))))
        else:
            files = tuple(
                sorted(
                    n for n in set(old.outputs) | set(new.outputs) if old.outputs.get(n) != new.outputs.get(n)
                )
            )
            changed = {
                n
                for n in set(old.codemods) | set(new.codemods or {})
                if old.codemods.get(n) != (new.codemods or {}).get(n)
            }
            found.append(Difference(version, "outputs", files, ordered(changed)))
    return found
