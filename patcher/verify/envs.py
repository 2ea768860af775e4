"""Per-release Python environments for verification (SPEC section 6).

Verification must run each release's upstream and output in that release's own world: its
transformers and the dependency versions it asks for.  Installing torch once per release
would cost minutes and gigabytes, so the environments are layered:

- one shared **base venv** ``<cache>/envs/base-torch2.13.0-py3.11``, made with
  ``python -m venv`` and filled by its own pip with torch (pip takes the local CPU wheel that
  the machine's pip configuration points at), onnx, onnxruntime and numpy;
- per release R a **target dir** ``<cache>/envs/transformers-R``, filled by
  ``uv pip install --target`` with transformers R and the dependencies R declares, except
  the packages the base venv provides (passed to uv as ``--excludes``), used by running the
  base venv's python with ``PYTHONPATH=<target dir>``.

uv keeps its cache under ``<cache>/uv`` so a release whose wheels were seen before installs
by hard links in about a second.  Every environment is built into a temporary sibling
directory, gets its completion marker last and is then renamed into place, all under an
``fcntl`` lock, so parallel runs never build one environment twice and an interrupted build
is never taken for a finished one.  Nothing here imports torch: this runs in patcher's own
environment.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from patcher.errors import PatcherError, UsageError

TORCH_VERSION = "2.13.0"
PYTHON_VERSION = "3.11"
BASE_NAME = f"base-torch{TORCH_VERSION}-py{PYTHON_VERSION}"
BASE_REQUIREMENTS = (f"torch=={TORCH_VERSION}", "onnx", "onnxruntime", "numpy")
# Packages the base venv provides; a release's target dir must not shadow them.  numpy is
# not among them: some releases (4.42-4.4x) require numpy<2, which their target dir then
# provides (torch 2.13 and onnxruntime run with numpy 1.26 as well).
PROVIDED_BY_BASE = ("torch", "onnx", "onnxruntime")
MARKER = ".patcher-env-complete"

Progress = Callable[[str], None]


class EnvError(PatcherError):
    """An environment could not be built (no network and nothing cached, a failing install)."""

    exit_code = 4


@dataclass(frozen=True)
class Env:
    """A ready environment: run ``python`` with :meth:`environ` to import release ``version``."""

    version: str
    python: Path
    target: Path

    def environ(self, *, offline: bool = True) -> dict[str, str]:
        """The process environment for running code against this release.

        ``PYTHONPATH`` puts the release's target dir first; offline flags make sure a check
        never reaches for the hub (the tiny models are built from configs, never fetched).
        """
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env["PYTHONPATH"] = str(self.target)
        env["PYTHONNOUSERSITE"] = "1"
        if offline:
            env["HF_HUB_OFFLINE"] = "1"
            env["TRANSFORMERS_OFFLINE"] = "1"
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        return env


def cache_root() -> Path:
    """patcher's cache root: ``$PATCHER_CACHE_DIR`` or the user cache directory."""
    return Path(os.environ.get("PATCHER_CACHE_DIR") or platformdirs.user_cache_dir("patcher"))


def envs_dir() -> Path:
    """Where the base venv and the per-release target dirs live."""
    return cache_root() / "envs"


def uv_cache_dir() -> Path:
    """uv's package cache, shared by every per-release install."""
    return cache_root() / "uv"


def base_dir() -> Path:
    """The shared base venv's directory."""
    return envs_dir() / BASE_NAME


def base_python() -> Path:
    """The shared base venv's interpreter."""
    return base_dir() / "bin" / "python"


#: Bumped whenever what a release environment holds changes, so old ones are rebuilt.
RELEASE_RECIPE = 2  # 2: with accelerate (4.51.0's from_pretrained cannot work without it)


def release_dir(version: str) -> Path:
    """The target dir holding transformers ``version`` and its own dependencies."""
    return envs_dir() / f"transformers-{version}-r{RELEASE_RECIPE}"


def is_complete(path: Path) -> bool:
    """True when ``path`` was built to the end (its marker is written last)."""
    return (path / MARKER).is_file()


def ensure_base(progress: Progress | None = None) -> Path:
    """Build the shared base venv unless it is complete; return its python."""
    _build_once(base_dir(), _build_base, progress, what="base environment (torch, onnx, onnxruntime)")
    return base_python()


def ensure_env(version: str, progress: Progress | None = None) -> Env:
    """Build (or reuse) the base venv and release ``version``'s target dir."""
    _check_version(version)
    python = ensure_base(progress)
    target = release_dir(version)
    _build_once(
        target,
        lambda tmp: _build_release(version, python, tmp),
        progress,
        what=f"environment for transformers {version}",
    )
    return Env(version=version, python=python, target=target)


def _check_version(version: str) -> None:
    """Refuse anything that is not a plain version number (it becomes a path and a pin)."""
    from packaging.version import InvalidVersion, Version

    try:
        parsed = Version(version)
    except InvalidVersion:
        raise UsageError(f"not a transformers version: {version!r}") from None
    if str(parsed) != version or parsed.local or len(parsed.release) < 3:
        raise UsageError(f"give an exact transformers version such as 4.40.2, not {version!r}")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` (blocks while another run builds ``path``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_once(final: Path, build: Callable[[Path], None], progress: Progress | None, *, what: str) -> None:
    """Run ``build`` into a temporary sibling of ``final``, mark it complete, rename it in place."""
    if is_complete(final):
        return
    with _locked(final):
        if is_complete(final):
            return
        if progress:
            progress(f"building {what} in {final}")
        started = time.monotonic()
        tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            build(tmp)
            marker = {"built": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": time.monotonic() - started}
            (tmp / MARKER).write_text(json.dumps(marker) + "\n")
            if final.exists():  # an incomplete leftover of an interrupted older layout
                shutil.rmtree(final)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if progress:
            progress(f"built {what} in {time.monotonic() - started:.1f}s")


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> None:
    """Run an installer command; on failure raise :class:`EnvError` with its last output line."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else f"exit code {proc.returncode}"
        raise EnvError(f"could not build {what}: {last}")


def find_python() -> str:
    """An interpreter of PYTHON_VERSION to make the base venv with (the torch wheel's ABI)."""
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == PYTHON_VERSION:
        return sys.executable
    found = shutil.which(f"python{PYTHON_VERSION}")
    if found:
        return found
    raise EnvError(f"verification needs a python{PYTHON_VERSION} interpreter on PATH")


def _build_base(tmp: Path) -> None:
    """``python -m venv`` plus the venv's own pip (so pip's configuration picks the torch wheel)."""
    _run([find_python(), "-m", "venv", str(tmp)], "the base venv")
    python = str(tmp / "bin" / "python")
    _check_torch_wheel(python)
    _run([python, "-m", "pip", "install", "--quiet", *BASE_REQUIREMENTS], "the base venv")


def _check_torch_wheel(python: str) -> None:
    """Refuse to build unless pip would take a CPU or local torch wheel.

    On PyPI, ``torch==2.13.0`` for Linux is the CUDA build, gigabytes of it; the machines
    this runs on provide the CPU wheel through pip's configuration (find-links).  A dry run
    reads only the wheel's metadata.
    """
    cmd = [python, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed", "--quiet"]
    proc = subprocess.run([*cmd, "--report", "-", BASE_REQUIREMENTS[0]], capture_output=True, text=True)
    try:
        chosen = json.loads(proc.stdout)["install"][0]
        url, version = chosen["download_info"]["url"], chosen["metadata"]["version"]
    except (ValueError, KeyError, IndexError):
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        raise EnvError(
            f"no {BASE_REQUIREMENTS[0]} wheel: {lines[-1] if lines else 'pip found none'}"
        ) from None
    if not (version.endswith("+cpu") or url.startswith("file:")):
        raise EnvError(
            f"pip would download torch {version} from {url}, not a CPU build; point pip at a CPU "
            "torch wheel (PIP_FIND_LINKS or PIP_EXTRA_INDEX_URL) and retry"
        )


def _uv() -> str:
    """The uv executable: the one installed next to patcher's python, else on PATH."""
    beside = Path(sys.executable).parent / "uv"
    if beside.is_file():
        return str(beside)
    found = shutil.which("uv")
    if found:
        return found
    raise EnvError("verification needs uv, which installing patcher installs (or: pip install uv)")


def _build_release(version: str, python: Path, tmp: Path) -> None:
    """``uv pip install --target`` transformers ``version`` minus what the base provides."""
    tmp.mkdir(parents=True)
    excludes = tmp / ".excludes.txt"
    excludes.write_text("".join(f"{name}\n" for name in PROVIDED_BY_BASE))
    cmd = [
        _uv(),
        "pip",
        "install",
        "--quiet",
        "--target",
        str(tmp),
        "--python",
        str(python),
        "--cache-dir",
        str(uv_cache_dir()),
        "--excludes",
        str(excludes),
        # accelerate as most users have it: from_pretrained then takes the low-memory path that
        # real checkpoints take (and 4.51.0 cannot load anything without it)
        f"transformers[accelerate]=={version}",
    ]
    _run(cmd, f"the environment for transformers {version}")
    excludes.unlink()
    env = Env(version=version, python=python, target=tmp).environ()
    probe = "import transformers.models.gemma.modeling_gemma as m; print(m.__file__)"
    proc = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        raise EnvError(
            f"transformers {version} does not import in its environment: {lines[-1] if lines else '?'}"
        )
