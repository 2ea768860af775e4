"""Talking to the package index: pip for wheels, the PyPI JSON API for release metadata.

Wheels are fetched by running ``python -m pip download`` with the interpreter patcher runs
in, so the user's pip configuration (index, mirrors, proxies, certificates) applies.  Whether
a release is yanked is not visible through ``pip`` (an exact ``==`` download of a yanked
release succeeds), so that, and the newest release, come from the PyPI JSON API; when it is
unreachable we fall back to ``pip index versions`` and say so on stderr.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from patcher.errors import UpstreamError

PYPI_JSON_URL = "https://pypi.org/pypi/transformers/json"
JSON_TIMEOUT = 20.0
# What an unreachable or misbehaving JSON API raises (URLError and timeouts are OSErrors).
_API_ERRORS = (OSError, ValueError, KeyError, TypeError, http.client.HTTPException)


def warn(message: str) -> None:
    """Print a one-line warning on stderr (never on stdout, which may carry --json)."""
    print(f"patcher: warning: {message}", file=sys.stderr)


def run_pip(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pip ARGS`` with this interpreter, capturing its output.

    The one place patcher starts pip: tests replace it to simulate an offline machine.
    """
    cmd = [sys.executable, "-m", "pip", *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise UpstreamError(f"cannot run {sys.executable} -m pip: {exc.strerror}") from exc


def _pip_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The most telling line of a failed pip run (its last ERROR line, else its last line)."""
    lines = [line.strip() for line in (proc.stderr + "\n" + proc.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    if errors:
        return errors[-1].removeprefix("ERROR:").strip()
    return lines[-1] if lines else f"pip exited with status {proc.returncode}"


_OFFLINE_SIGNS = (
    "NewConnectionError",
    "ProxyError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "ConnectTimeoutError",
    "ReadTimeoutError",
)


def _looks_offline(proc: subprocess.CompletedProcess[str]) -> bool:
    """Whether pip failed because it could not reach the index (its last ERROR line hides that)."""
    output = proc.stderr + proc.stdout
    return any(sign in output for sign in _OFFLINE_SIGNS)


def download_wheel(version: str, dest: Path) -> Path:
    """Download the transformers wheel of ``version`` into the empty directory ``dest``.

    Raises UpstreamError with pip's own reason on failure; callers that know about a cache
    turn that into a message about the cache.
    """
    proc = run_pip(
        [
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            f"transformers=={version}",
            "-d",
            str(dest),
        ]
    )
    if proc.returncode != 0:
        if "No module named pip" in proc.stderr:
            raise UpstreamError(
                f"pip is not installed in {sys.executable}; install it (python -m ensurepip) to fetch wheels"
            )
        if _looks_offline(proc):
            raise UpstreamError(
                f"pip could not reach the package index for transformers=={version} "
                "(no network? check your proxy and index settings)"
            )
        raise UpstreamError(f"pip could not download transformers=={version}: {_pip_error_line(proc)}")
    wheels = sorted(dest.glob("transformers-*.whl"))
    if len(wheels) != 1:
        raise UpstreamError(
            f"pip download of transformers=={version} left {len(wheels)} wheels in {dest}, expected 1"
        )
    return wheels[0]


class JsonApiUnavailable(Exception):
    """The PyPI JSON API could not be reached or read; callers fall back to pip."""


@dataclass(frozen=True)
class Release:
    """One transformers version as the PyPI JSON API lists it."""

    version: str
    yanked: bool
    yanked_reason: str | None


def _fetch_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=JSON_TIMEOUT) as response:
        return json.load(response)


_releases_memo: dict[str, Release] | None = None


def pypi_releases() -> dict[str, Release]:
    """All transformers versions on PyPI with their yanked flag (memoised per process).

    A release counts as yanked when every file of it is (PEP 592 yanks files; PyPI yanks a
    release by yanking all of them).  Raises one of ``_API_ERRORS`` when the API is unreachable
    or answers nonsense, so that callers can fall back.
    """
    global _releases_memo
    if _releases_memo is None:
        data = _fetch_json(PYPI_JSON_URL)
        releases: dict[str, Release] = {}
        for version, files in data["releases"].items():
            if not files:
                continue
            yanked = all(f.get("yanked", False) for f in files)
            reason = next((f["yanked_reason"] for f in files if f.get("yanked_reason")), None)
            reason = " ".join(str(reason).split()) if reason else None  # keep messages on one line
            releases[version] = Release(version, yanked, reason if yanked else None)
        _releases_memo = releases
    return _releases_memo


def release_info(version: str) -> Release | None:
    """PyPI's record of ``version`` (None if PyPI does not list it).

    Raises JsonApiUnavailable (its message is the reason) when the JSON API is unreachable.
    """
    try:
        releases = pypi_releases()
    except _API_ERRORS as exc:
        raise JsonApiUnavailable(_reason(exc)) from exc
    return releases.get(version)


def is_final(version: str) -> bool:
    """Whether ``version`` is a final release (not a pre-, dev or local release)."""
    try:
        parsed = Version(version)
    except InvalidVersion:
        return False
    return not (parsed.is_prerelease or parsed.is_devrelease or parsed.local)


def listed_releases() -> list[Release]:
    """Every transformers version the index lists, oldest first, with its yanked flag.

    From the PyPI JSON API; if that is unreachable, from ``pip index versions`` with a
    warning.  pip hides the yanked releases of the configured index itself, so in that case
    none is flagged: they are simply absent.  Versions that are not PEP 440 are left out.
    """
    try:
        releases = list(pypi_releases().values())
    except _API_ERRORS as exc:
        warn(f"PyPI JSON API unreachable ({_reason(exc)}); asking `pip index versions` instead")
        releases = [Release(v, False, None) for v in _pip_index_versions()]
    valid = [r for r in releases if _parses(r.version)]
    return sorted(valid, key=lambda r: Version(r.version))


def _parses(version: str) -> bool:
    try:
        Version(version)
    except InvalidVersion:
        return False
    return True


def final_releases() -> list[str]:
    """Non-yanked, non-pre-release transformers versions, oldest first (see ``listed_releases``)."""
    return [r.version for r in listed_releases() if not r.yanked and is_final(r.version)]


def _pip_index_versions() -> list[str]:
    proc = run_pip(["index", "versions", "transformers", "--disable-pip-version-check"])
    if proc.returncode != 0:
        raise UpstreamError(
            f"cannot list transformers releases (no network?): {_pip_error_line(proc)}; "
            "connect to the package index, or pin an exact version"
        )
    for line in proc.stdout.splitlines():
        if line.strip().startswith("Available versions:"):
            listed = line.split(":", 1)[1]
            return [v.strip() for v in listed.split(",") if v.strip()]
    raise UpstreamError("`pip index versions transformers` listed no versions; pin an exact version instead")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and exc.reason:
        return str(exc.reason)
    return str(exc) or type(exc).__name__
