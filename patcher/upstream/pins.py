"""Pins: what each supported transformers release's upstream files hash to.

One JSON file per release in ``upstream_pins/`` records the wheel (file name and sha256) and
the sha256 of each upstream file we read from it.  Every upstream file is checked against
its pin before use, so a pin is the project's promise that outputs were generated from
exactly these bytes; no upstream source is committed.  Pin files are written with sorted
keys, indent 2 and a trailing newline so the same pin is always the same bytes.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from patcher.errors import UpstreamError, UsageError
from patcher.upstream.cache import BlobCache
from patcher.upstream.families import Family, family
from patcher.upstream.versions import check_release
from patcher.upstream.wheel import read_gemma_files, sha256_file

# `pypi` (http.client, email: ~35 ms) is imported inside the functions that use the network,
# so that reading pins, which every command does, does not load it.

PINS_DIR = Path(__file__).resolve().parents[2] / "upstream_pins"
RESERVED = {"lock.json"}  # the lock of expected output digests lives beside the pins
_HEX64 = re.compile(r"[0-9a-f]{64}")
_WHEEL = re.compile(r"transformers-[0-9.]+-[\w.]+-[\w.]+-[\w.]+\.whl")


@dataclass(frozen=True)
class Pin:
    """One release: its wheel's file name and sha256, and the sha256 of each Gemma file."""

    version: str
    wheel: str
    wheel_sha256: str
    files: dict[str, str]

    def to_json(self) -> str:
        """The pin file's exact text (deterministic: sorted keys, indent 2, final newline)."""
        data = {
            "version": self.version,
            "wheel": self.wheel,
            "wheel_sha256": self.wheel_sha256,
            "files": dict(self.files),
        }
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def pins_dir(directory: Path | None = None, model: Family | str | None = None) -> Path:
    """``directory`` if given, else ``$PATCHER_PINS_DIR``, else the repository's PINS_DIR; a
    family other than gemma keeps its pins in a subdirectory of it (``mistral/``)."""
    root = Path(directory) if directory is not None else Path(os.environ.get("PATCHER_PINS_DIR") or PINS_DIR)
    return root / family(model).pins_subdir


def _bad_pin(path: Path, why: str, fam: Family | None = None) -> UsageError:
    command = f"patcher pin{family(fam).option}"
    return UsageError(f"pin file {path} is invalid ({why}); restore it from git or re-run `{command}`")


def _parse_pin(path: Path, fam: Family) -> Pin:
    """Read and validate one pin file; the file name must be ``<version>.json``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise _bad_pin(path, "not readable JSON: nested too deeply", fam) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _bad_pin(path, f"not readable JSON: {' '.join(str(exc).split())}", fam) from None
    if not isinstance(data, dict) or set(data) != {"version", "wheel", "wheel_sha256", "files"}:
        raise _bad_pin(path, "expected exactly the keys files, version, wheel, wheel_sha256", fam)
    version, wheel, wheel_sha, files = data["version"], data["wheel"], data["wheel_sha256"], data["files"]
    if version != path.stem:
        raise _bad_pin(path, f"it pins {str(version)[:40]!r} but is named {path.name}", fam)
    try:
        check_release(version)
    except UsageError as exc:
        raise _bad_pin(path, f"version: {exc}", fam) from None
    if (
        not isinstance(wheel, str)
        or not _WHEEL.fullmatch(wheel)
        or not wheel.startswith(f"transformers-{version}-")
    ):
        raise _bad_pin(
            path, f"wheel {str(wheel)[:60]!r} is not the file name of a transformers {version} wheel", fam
        )
    if not isinstance(files, dict) or set(files) != set(fam.files):
        raise _bad_pin(path, f"files must name exactly {', '.join(fam.files)}", fam)
    for digest in (wheel_sha, *files.values()):
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise _bad_pin(path, f"{digest!r} is not a lowercase hex sha256", fam)
    return Pin(version=version, wheel=wheel, wheel_sha256=wheel_sha, files=dict(files))


def load_pins(directory: Path | None = None, model: Family | str | None = None) -> dict[str, Pin]:
    """All pins of a family (default gemma), keyed by version, oldest release first.  A
    missing directory has none."""
    fam = family(model)
    root = pins_dir(directory, fam)
    if not root.is_dir():
        return {}
    pins = []
    for path in root.glob("*.json"):
        if path.name in RESERVED or path.name.startswith("."):
            continue
        try:
            key = Version(path.stem)
        except InvalidVersion:
            raise _bad_pin(path, "its name is not <version>.json", fam) from None
        pins.append((key, _parse_pin(path, fam)))
    return {pin.version: pin for _, pin in sorted(pins, key=lambda item: item[0])}


def cannot_write(path: Path, exc: OSError) -> UsageError:
    """The one-line error for a pins directory (or the lock in it) that cannot be written."""
    where = exc.filename or path
    return UsageError(
        f"cannot write {path} ({where}: {exc.strerror}); make {path.parent} writable, "
        "or set PATCHER_PINS_DIR to a writable copy of upstream_pins/"
    )


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``path`` through a temporary sibling and one rename; UsageError when the
    directory cannot be written (nothing is left behind then)."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise cannot_write(path, exc) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def check_writable(directory: Path | None = None, model: Family | str | None = None) -> None:
    """Refuse, before any download, a pins directory that cannot take a new pin."""
    root = pins_dir(directory, model)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".probe-", suffix=".tmp"):
            pass
    except OSError as exc:
        raise cannot_write(root / "<version>.json", exc) from None


def write_pin(pin: Pin, directory: Path | None = None, model: Family | str | None = None) -> Path:
    """Write ``<directory>/<version>.json`` atomically and return its path."""
    target = pins_dir(directory, model) / f"{pin.version}.json"
    write_text_atomically(target, pin.to_json())
    return target


def _refuse_yanked(version: str) -> None:
    """UsageError if PyPI lists ``version`` as yanked or not at all; warn if PyPI is unreachable."""
    from patcher.upstream import pypi

    try:
        info = pypi.release_info(version)
    except pypi.JsonApiUnavailable as exc:
        pypi.warn(f"PyPI JSON API unreachable ({exc}); cannot check whether transformers {version} is yanked")
        return
    if info is None:
        raise UsageError(f"transformers {version} is not a release on PyPI; check the version number")
    if info.yanked:
        why = f" ({info.yanked_reason})" if info.yanked_reason else ""
        raise UsageError(f"transformers {version} is yanked on PyPI{why}; pin another release")


def pin_release(
    version: str,
    directory: Path | None = None,
    cache: BlobCache | None = None,
    model: Family | str | None = None,
) -> Pin:
    """Download ``version``'s wheel, record its digests as a pin, and cache its Gemma files.

    Refuses malformed versions, releases before Gemma (4.38.0), pre-releases and yanked
    releases.  Re-pinning an already pinned release rewrites an identical file.
    """
    from patcher.upstream import pypi

    fam = family(model)
    version = check_release(version, fam)
    _refuse_yanked(version)
    cache = cache if cache is not None else BlobCache()
    with tempfile.TemporaryDirectory(prefix="patcher-pin-") as tmp:
        wheel = pypi.download_wheel(version, Path(tmp))
        expected = f"transformers-{version}-"
        if not wheel.name.startswith(expected):
            raise UpstreamError(
                f"pip downloaded {wheel.name} for transformers=={version}; expected {expected}*"
            )
        wheel_sha = sha256_file(wheel)
        contents = read_gemma_files(wheel, fam)
    files = {name: cache.put(data) for name, data in sorted(contents.items())}
    pin = Pin(version=version, wheel=wheel.name, wheel_sha256=wheel_sha, files=files)
    write_pin(pin, directory, fam)
    return pin


def latest_release() -> str:
    """The newest transformers release that is neither yanked nor a pre-release."""
    from patcher.upstream import pypi

    releases = pypi.final_releases()
    if not releases:
        raise UpstreamError("the package index lists no final transformers release; check its configuration")
    return releases[-1]
