"""Acquiring upstream Gemma files: from a pinned wheel (cached), the installed package, or disk.

Every file that comes from a release is checked against that release's pin before anyone
sees it: a wheel or file that differs is an UpstreamError, never a warning.  Files from a
wheel are kept in the content-addressed cache (:mod:`patcher.upstream.cache`), so a release is
downloaded once and works offline afterwards; a damaged cache entry is dropped and fetched
again.  Text is decoded from the exact bytes (no newline translation) so that the digest and
the text always describe the same file.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from patcher.errors import UpstreamError, UsageError
from patcher.upstream.cache import BlobCache, cache_root, sha256_bytes
from patcher.upstream.families import Family, family
from patcher.upstream.pins import Pin, load_pins
from patcher.upstream.versions import FIRST_GEMMA, check_release
from patcher.upstream.wheel import (
    MAX_UPSTREAM_BYTES,
    check_size,
    read_gemma_files,
    sha256_file,
)

__all__ = ["Upstream", "cache_root", "fetch", "from_files", "from_installed"]

Progress = Callable[[str], None]


def _quiet(message: str) -> None:
    """The default progress callback: say nothing."""


@dataclass(frozen=True)
class Upstream:
    """The upstream files one output is generated from, with their digests and provenance.

    ``version`` is None for local files, whose ``configuration`` may also be absent; their
    ``paths`` are the modeling and configuration paths as the user gave them.
    """

    version: str | None
    modeling: str
    configuration: str | None
    modeling_sha256: str
    configuration_sha256: str | None
    origin: str
    paths: tuple[str, str | None] | None = None
    #: the model family (``gemma``, ``mistral``): which files these are, which series applies
    model: str = "gemma"

    @property
    def family(self) -> Family:
        return family(self.model)


def _decode(data: bytes, where: str, error: type[Exception] = UpstreamError) -> str:
    """UTF-8 text, without the byte-order mark some editors put first (Python ignores it too;
    the digest is still that of the bytes as they are)."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise error(f"{where} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def _from_pinned_bytes(pin: Pin, contents: Mapping[str, bytes], origin: str, fam: Family) -> Upstream:
    modeling, configuration = fam.modeling, fam.configuration
    return Upstream(
        version=pin.version,
        modeling=_decode(contents[modeling], f"{modeling} of transformers {pin.version}"),
        configuration=_decode(contents[configuration], f"{configuration} of transformers {pin.version}"),
        modeling_sha256=pin.files[modeling],
        configuration_sha256=pin.files[configuration],
        origin=origin,
        model=fam.name,
    )


def _lookup_pin(version: str, pins: Mapping[str, Pin] | None, fam: Family) -> Pin:
    pins = load_pins(model=fam) if pins is None else pins
    pin = pins.get(version)
    if pin is None:
        raise UsageError(
            f"transformers {version} is not pinned{' for ' + fam.name if fam.pins_subdir else ''}; "
            f"run `patcher pin{fam.option} {version}` first"
        )
    return pin


def _download_checked(pin: Pin, cache: BlobCache, fam: Family) -> dict[str, bytes]:
    """Download the pinned wheel, check it and both files against the pin, cache the files."""
    from patcher.upstream import pypi  # not at the top: http.client and email, for downloads only

    with tempfile.TemporaryDirectory(prefix="patcher-fetch-") as tmp:
        try:
            wheel = pypi.download_wheel(pin.version, Path(tmp))
        except UpstreamError as exc:
            raise UpstreamError(
                f"cannot download transformers=={pin.version} (no network?) and it is not in the cache "
                f"at {cache.root}; connect once to fill the cache, or set PATCHER_CACHE_DIR to a cache "
                f"that holds it ({exc})"
            ) from exc
        actual = sha256_file(wheel)
        if actual != pin.wheel_sha256:
            raise UpstreamError(
                f"wheel {wheel.name} has sha256 {actual} but the pin of transformers {pin.version} "
                f"({pin.wheel}) says {pin.wheel_sha256}; check your package index or mirror"
            )
        contents = read_gemma_files(wheel, fam)
    for name, data in contents.items():
        actual = sha256_bytes(data)
        if actual != pin.files[name]:
            raise UpstreamError(
                f"{name} in {pin.wheel} has sha256 {actual} but the pin of transformers {pin.version} "
                f"says {pin.files[name]}; the pin file is wrong: restore it from git"
            )
        cache.put(data)
    return contents


def fetch(
    version: str,
    pins: Mapping[str, Pin] | None = None,
    *,
    progress: Progress | None = None,
    cache: BlobCache | None = None,
    model: Family | str | None = None,
) -> Upstream:
    """The pinned upstream files of release ``version`` (of the family ``model``, default
    gemma), from the cache or its wheel.

    ``version`` must be a pinned release (see :func:`patcher.upstream.versions.resolve`); ``pins``
    defaults to :func:`patcher.upstream.pins.load_pins`, ``cache`` to the user cache.
    """
    progress = progress or _quiet
    fam = family(model)
    pin = _lookup_pin(version, pins, fam)
    cache = cache if cache is not None else BlobCache()
    contents: dict[str, bytes] = {}
    for name in fam.files:
        existed = cache.path(pin.files[name]).exists()
        data = cache.get(pin.files[name])
        if data is None and existed:
            progress(f"cache entry for {name} of transformers {version} was damaged; fetching it again")
        if data is not None:
            contents[name] = data
    if len(contents) < len(fam.files):
        progress(f"downloading transformers=={version} ...")
        contents = _download_checked(pin, cache, fam)
    return _from_pinned_bytes(pin, contents, f"pypi wheel {pin.wheel}", fam)


def _package_dir() -> Path:
    """Where the importable transformers package lives, found without importing it."""
    try:
        spec = importlib.util.find_spec("transformers")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not (spec.submodule_search_locations or spec.origin):
        raise UsageError(
            f"transformers is not installed for {sys.executable}; install it, "
            "or give a version such as --transformers 4.40 to use a pinned release"
        )
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(spec.origin).parent


def _installed_version(package: Path) -> str | None:
    """The version of the transformers at ``package``: its dist-info, else its ``__version__``."""
    import importlib.metadata  # ~25 ms, for `--transformers installed` alone

    for dist in importlib.metadata.distributions(name="transformers", path=[str(package.parent)]):
        return dist.version
    try:
        init = (package / "__init__.py").read_text(encoding="utf-8")
    except OSError:
        init = ""
    found = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", init, re.MULTILINE)
    if found:
        return found.group(1)
    try:
        return importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        return None


def _same_release(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def _pin_of_same_files(version: str, contents: Mapping[str, bytes], pins: Mapping[str, Pin]) -> Pin | None:
    """For a post-release or local build (``4.40.2.post1``, ``4.40.2+vacc``): the pin of its
    base release when the installed files are byte for byte the ones that pin records."""
    try:
        base = Version(version).base_version
    except InvalidVersion:
        return None
    pin = pins.get(base)
    if pin is None or any(sha256_bytes(data) != pin.files[name] for name, data in contents.items()):
        return None
    return pin


def _unpinned_installed(version: str, package: Path, fam: Family) -> str:
    """What to do about an installed transformers that no pin covers."""
    files = package / "models" / fam.name / fam.modeling
    try:
        check_release(version)
    except UsageError:  # a post-release, pre-release or local build: `patcher pin` refuses it
        return (
            f"installed transformers {version} (at {package}) is not a final release, so it cannot be "
            f"pinned; pass its files with --upstream {files}, or install a pinned final release"
        )
    return (
        f"installed transformers {version} (at {package}) is not pinned; "
        f"run `patcher pin{fam.option} {version}` first, or pass its files with --upstream"
    )


def from_installed(pins: Mapping[str, Pin] | None = None, model: Family | str | None = None) -> Upstream:
    """The Gemma files of the transformers importable beside patcher, checked against its pin.

    The package is located, never imported (importing transformers takes seconds and may
    need torch).  Its version must be pinned so that its files can be checked.
    """
    package = _package_dir()
    version = _installed_version(package)
    if version is None:
        raise UsageError(f"cannot tell which transformers version is installed at {package}; reinstall it")
    fam = family(model)
    gemma = package / "models" / fam.name
    contents: dict[str, bytes] = {}
    for name in fam.files:
        try:
            check_size((gemma / name).stat().st_size, f"installed {gemma / name}", UsageError)
            contents[name] = (gemma / name).read_bytes()
        except FileNotFoundError:
            raise UsageError(
                f"installed transformers {version} at {package} has no models/{fam.name}/{name}; "
                f"patcher's {fam.prefix} starts at transformers {fam.first}"
                if fam.pins_subdir
                else f"installed transformers {version} at {package} has no models/gemma/{name}; "
                f"Gemma first appears in transformers {FIRST_GEMMA}"
            ) from None
        except OSError as exc:
            raise UsageError(f"cannot read {gemma / name}: {exc.strerror}") from exc
    pins = load_pins(model=fam) if pins is None else pins
    pin = next((p for v, p in pins.items() if _same_release(v, version)), None)
    if pin is None:
        pin = _pin_of_same_files(version, contents, pins)
    if pin is None:
        raise UsageError(_unpinned_installed(version, package, fam))
    for name, data in contents.items():
        actual = sha256_bytes(data)
        if actual != pin.files[name]:
            raise UpstreamError(
                f"installed {gemma / name} has sha256 {actual} but the pin of transformers {pin.version} "
                f"says {pin.files[name]} (modified locally?); reinstall transformers=={pin.version}"
            )
    return _from_pinned_bytes(pin, contents, f"installed transformers {version} at {package}", fam)


def _read_local(path: Path) -> bytes:
    """A local file's bytes, read no further than the size limit (``/dev/zero`` ends too)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_UPSTREAM_BYTES + 1)
            if len(data) > MAX_UPSTREAM_BYTES:
                size = os.fstat(handle.fileno()).st_size
                check_size(max(size, len(data)), f"upstream file {path}", UsageError)
    except OSError as exc:
        raise UsageError(f"cannot read upstream file {path}: {exc.strerror}") from exc
    return data


def _python_text(data: bytes, path: Path) -> str:
    """A local upstream file's text, refused unless it is UTF-8 Python (one line saying where)."""
    text = _decode(data, str(path), UsageError)
    try:
        compile(text, str(path), "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
    except (RecursionError, MemoryError):
        raise UsageError(f"{path} is nested too deeply to be read; give a valid upstream file") from None
    except SyntaxError as exc:
        where = f"{path}:{exc.lineno}" if exc.lineno else str(path)
        raise UsageError(f"{where}: {exc.msg}; give a valid Python file") from None
    except ValueError as exc:  # null bytes
        raise UsageError(f"{path} is not Python source ({exc})") from None
    return text


def from_files(
    modeling_path: Path, configuration_path: Path | None = None, model: Family | str | None = None
) -> Upstream:
    """Upstream files given as paths (unpinned, so unchecked); ``version`` is None."""
    modeling_bytes = _read_local(modeling_path)
    config_bytes = _read_local(configuration_path) if configuration_path is not None else None
    origin = f"local file {modeling_path}"
    if configuration_path is not None:
        origin += f" and {configuration_path}"
    return Upstream(
        version=None,
        modeling=_python_text(modeling_bytes, modeling_path),
        configuration=_python_text(config_bytes, configuration_path) if config_bytes is not None else None,
        modeling_sha256=sha256_bytes(modeling_bytes),
        configuration_sha256=sha256_bytes(config_bytes) if config_bytes is not None else None,
        origin=origin,
        paths=(str(modeling_path), str(configuration_path) if configuration_path is not None else None),
        model=family(model).name,
    )
