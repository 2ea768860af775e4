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

That is the **current** toolchain.  Another toolchain (``patcher.toolchains``: **vacc**, the
vendor's deploy stack with torch 2.1.0) has its own base venv, built with uv from the
package index, and its own per-release target dirs (``vacc-transformers-R``) beside these.

After installing a release, a probe runs that release's own Gemma (import, a tiny forward,
``save_pretrained`` and ``from_pretrained``) in the environment.  When it cannot run there,
the toolchain **refuses** the release (the reason names the torch requirement the release
declares, where that excludes the toolchain's torch, and the error).  The reason is kept in the target dir
(``.patcher-refused``), so it is found again without a rebuild, and :func:`ensure_env`
raises :class:`ToolchainRefused` with it.

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
from patcher.verify import toolchains
from patcher.verify.toolchains import Toolchain

PYTHON_VERSION = "3.11"
TORCH_VERSION = toolchains.CURRENT.torch
BASE_NAME = toolchains.CURRENT.base_name
BASE_REQUIREMENTS = toolchains.CURRENT.base_requirements
#: Packages the current base venv provides; a release's target dir must not shadow them.
PROVIDED_BY_BASE = toolchains.CURRENT.provided
MARKER = ".patcher-env-complete"
#: In a release's target dir: why the toolchain refuses that release (see ToolchainRefused).
REFUSED = ".patcher-refused"
#: In a base venv: the versions its packages were installed at (JSON).
INSTALLED = "patcher-toolchain.json"

Progress = Callable[[str], None]


class EnvError(PatcherError):
    """An environment could not be built (no network and nothing cached, a failing install)."""

    exit_code = 4


class ToolchainRefused(PatcherError):
    """The release's own transformers cannot run on this toolchain: nothing of patcher's was
    verified there, and nothing of patcher's failed (exit 7)."""

    exit_code = 7

    def __init__(self, version: str, toolchain: str, reason: str) -> None:
        super().__init__(f"toolchain {toolchain} refuses transformers {version}: {reason}")
        self.version, self.toolchain, self.reason = version, toolchain, reason


@dataclass(frozen=True)
class Env:
    """A ready environment: run ``python`` with :meth:`environ` to import release ``version``."""

    version: str
    python: Path
    target: Path
    toolchain: str = toolchains.DEFAULT

    def environ(self, *, offline: bool = True) -> dict[str, str]:
        """The process environment for running code against this release.

        ``PYTHONPATH`` puts the release's target dir first; offline flags make sure a check
        never reaches for the hub (the tiny models are built from configs, never fetched).
        ``PYTHONDONTWRITEBYTECODE`` is dropped: the target dir is patcher's own cache and uv
        installs it without bytecode, so with the variable set (as in many containers) every
        check process compiles transformers' modules anew (1.6 s of 2.2 s importing Gemma);
        without it the first check caches them next to their sources, as Python does by default.
        """
        unset = ("PYTHONPATH", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE")
        env = {k: v for k, v in os.environ.items() if k not in unset}
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


def base_dir(toolchain: Toolchain = toolchains.CURRENT) -> Path:
    """The toolchain's shared base venv's directory."""
    return envs_dir() / toolchain.base_name


def base_python(toolchain: Toolchain = toolchains.CURRENT) -> Path:
    """The toolchain's shared base venv's interpreter."""
    return base_dir(toolchain) / "bin" / "python"


#: Bumped whenever what a release environment holds changes, so old ones are rebuilt.
RELEASE_RECIPE = toolchains.CURRENT.release_recipe


def release_dir(version: str, toolchain: Toolchain = toolchains.CURRENT) -> Path:
    """The target dir holding transformers ``version`` and its own dependencies."""
    return envs_dir() / f"{toolchain.release_prefix}-{version}-r{toolchain.release_recipe}"


def installed_versions(toolchain: Toolchain = toolchains.CURRENT) -> dict[str, str]:
    """The versions the toolchain's base venv was built with ({} before it is built)."""
    try:
        return dict(json.loads((base_dir(toolchain) / INSTALLED).read_text())["installed"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def moved_pins(toolchain: Toolchain, installed: dict[str, str]) -> list[str]:
    """The vendor pins that could not be taken exactly, in words: ``onnxruntime 1.15.0 (pinned
    1.13.1: the nearest with a wheel for Python 3.11)``."""
    moved = []
    for name, pinned in toolchain.vendor_pins.items():
        got = installed.get(name)
        if got is not None and got != pinned:
            nearest = f"the nearest with a wheel for Python {PYTHON_VERSION}"
            moved.append(f"{name} {got} (pinned {pinned}: {nearest})")
    return moved


def is_complete(path: Path) -> bool:
    """True when ``path`` was built to the end (its marker is written last)."""
    return (path / MARKER).is_file()


def ensure_base(progress: Progress | None = None, toolchain: Toolchain = toolchains.CURRENT) -> Path:
    """Build the toolchain's shared base venv unless it is complete; return its python."""
    _build_once(
        base_dir(toolchain),
        lambda tmp: _build_base(tmp, toolchain),
        progress,
        what=f"base environment of toolchain {toolchain.name} ({toolchain.summary})",
    )
    return base_python(toolchain)


def ensure_env(
    version: str, progress: Progress | None = None, toolchain: Toolchain = toolchains.CURRENT
) -> Env:
    """Build (or reuse) the base venv and release ``version``'s target dir on ``toolchain``.

    Raises :class:`ToolchainRefused` when the release cannot run on the toolchain.
    """
    _check_version(version)
    python = ensure_base(progress, toolchain)
    target = release_dir(version, toolchain)
    _build_once(
        target,
        lambda tmp: _build_release(version, python, tmp, toolchain),
        progress,
        what=f"environment for transformers {version} on toolchain {toolchain.name}",
    )
    refused = target / REFUSED
    if refused.is_file():
        raise ToolchainRefused(version, toolchain.name, refused.read_text(encoding="utf-8").strip())
    return Env(version=version, python=python, target=target, toolchain=toolchain.name)


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


def _build_base(tmp: Path, toolchain: Toolchain = toolchains.CURRENT) -> None:
    """The toolchain's base venv, then a record of the versions it got (``INSTALLED``).

    ``pip``: ``python -m venv`` plus the venv's own pip (so pip's configuration picks the
    local CPU torch wheel).  ``uv``: ``uv venv`` plus ``uv pip install`` from the package
    index, wheels only, each requirement at the lowest version that has a wheel for this
    Python (the vendor's pin where there is one); torch 2.1.0 from the index is the CUDA
    build with its nvidia-* wheels (about 4.7 GB), which it needs to import even on a CPU.
    """
    what = f"the base venv of toolchain {toolchain.name}"
    python = str(tmp / "bin" / "python")
    if toolchain.installer == "pip":
        _run([find_python(), "-m", "venv", str(tmp)], what)
        _check_torch_wheel(python)
        _run([python, "-m", "pip", "install", "--quiet", *toolchain.base_requirements], what)
    else:
        _run([_uv(), "venv", "--quiet", "--python", find_python(), str(tmp)], what)
        constraints = tmp / ".constraints.txt"
        constraints.write_text("".join(f"{c}\n" for c in toolchain.base_constraints))
        cmd = [_uv(), "pip", "install", "--quiet", "--python", python, "--cache-dir", str(uv_cache_dir())]
        cmd += ["--resolution", "lowest-direct", "--no-build", "--constraints", str(constraints)]
        _run([*cmd, *toolchain.base_requirements], what)
        constraints.unlink()
    names = [_requirement_name(r) for r in toolchain.base_requirements]
    probe = (
        "import json, sys\nfrom importlib.metadata import version\n"
        "print(json.dumps({n: version(n) for n in sys.argv[1:]}))"
    )
    proc = subprocess.run([python, "-c", probe, *names], capture_output=True, text=True)
    if proc.returncode != 0:
        raise EnvError(f"could not build {what}: its packages cannot be read ({_last_line(proc.stderr)})")
    record = {"toolchain": toolchain.name, "installed": json.loads(proc.stdout)}
    (tmp / INSTALLED).write_text(json.dumps(record, indent=1) + "\n")


def _requirement_name(requirement: str) -> str:
    from packaging.requirements import Requirement

    return Requirement(requirement).name


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


#: Where PyTorch publishes its CPU wheels (named in the error when pip would take a CUDA one).
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


def _check_torch_wheel(python: str, requirement: str = BASE_REQUIREMENTS[0]) -> None:
    """Refuse to build unless pip would take a CPU or local torch wheel.

    On PyPI, ``torch==2.13.0`` for Linux is the CUDA build, gigabytes of it; the machines
    this runs on provide the CPU wheel through pip's configuration (find-links).  A dry run
    reads only the wheel's metadata.
    """
    cmd = [python, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed", "--quiet"]
    proc = subprocess.run([*cmd, "--report", "-", requirement], capture_output=True, text=True)
    try:
        chosen = json.loads(proc.stdout)["install"][0]
        url, version = chosen["download_info"]["url"], chosen["metadata"]["version"]
    except (ValueError, KeyError, IndexError):
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        raise EnvError(f"no {requirement} wheel: {lines[-1] if lines else 'pip found none'}") from None
    if not (version.endswith("+cpu") or url.startswith("file:")):
        raise EnvError(
            f"pip would download torch {version} from {url}, not a CPU build; point pip at "
            f"torch's CPU wheels and retry: PIP_EXTRA_INDEX_URL={CPU_TORCH_INDEX} (or PIP_FIND_LINKS "
            "to a directory holding the wheel)"
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


def _build_release(version: str, python: Path, tmp: Path, toolchain: Toolchain = toolchains.CURRENT) -> None:
    """``uv pip install --target`` transformers ``version`` minus what the base provides, then
    the probe: a release that cannot run on the toolchain gets its reason in ``REFUSED``."""
    tmp.mkdir(parents=True)
    excludes = tmp / ".excludes.txt"
    excludes.write_text("".join(f"{name}\n" for name in toolchain.provided))
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
        toolchain.release_requirement.format(version=version),
    ]
    _run(cmd, f"the environment for transformers {version}")
    excludes.unlink()
    reason = refusal(version, python, tmp, toolchain)
    if reason:
        (tmp / REFUSED).write_text(reason + "\n", encoding="utf-8")


#: Run in the release's environment: its own Gemma must import, run a tiny forward pass
#: with eager attention (4.55 asks torch >= 2.1.1 for SDPA, its default, but runs eager on
#: torch 2.1.0), and load a checkpoint of itself through ``from_pretrained`` (4.51.0 and
#: 4.52.1-4.52.4 cannot without accelerate >= 0.26, and take the vendor's 0.25.0 for none).
PROBE = """
import json, re, sys, tempfile
import torch
result = {}
step = ""
try:
    import transformers
    from transformers.utils import is_torch_available
    if not is_torch_available():
        raise ImportError(f"transformers does not take torch {torch.__version__} "
                          "(is_torch_available() is False)")
    from transformers.models.gemma import modeling_gemma as m
    size = dict(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=1, head_dim=8)
    # eager attention, as the checks use it: the default (SDPA) may want a newer torch
    try:
        config = m.GemmaConfig(**size, attn_implementation="eager")
    except TypeError:
        config = m.GemmaConfig(**size)
    try:
        config._attn_implementation = "eager"
    except AttributeError:
        config._attn_implementation_internal = "eager"
    model = m.GemmaForCausalLM(config).eval()
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]))
    # the vacc compiler's front end loads checkpoints with from_pretrained: it must work
    step = "from_pretrained: "
    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        m.GemmaForCausalLM.from_pretrained(directory, attn_implementation="eager")
except Exception as error:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    first = re.sub(r" [(]/[^()]*[)]$", "", lines[0]) if lines else ""  # an ImportError's file path
    result["error"] = f"{step}{type(error).__name__}: {first}"[:300]
print(json.dumps(result))
"""


def refusal(version: str, python: Path, target: Path, toolchain: Toolchain) -> str | None:
    """Why ``toolchain`` cannot run transformers ``version`` installed in ``target``, or None.

    Decided by running: the release's own Gemma must import, run a tiny forward pass and
    load a checkpoint of itself through ``from_pretrained`` there.  When it cannot, the
    reason names the torch requirement the release declares
    (its ``torch`` extra) if that excludes the toolchain's torch, then the error.  A
    declaration alone refuses nothing: 4.52.1-4.52.4 declare ``torch<2.7`` and run (and
    pass) on torch 2.13.  A probe that cannot even start (torch itself fails to import) is
    an environment error, not a refusal.
    """
    env = Env(version=version, python=python, target=target).environ()
    proc = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True, env=env)
    try:
        result = json.loads(_last_line(proc.stdout))
    except ValueError:
        what = f"transformers {version} could not be probed on toolchain {toolchain.name}"
        raise EnvError(f"{what}: {_last_line(proc.stderr)}") from None
    if not result.get("error"):
        return None
    reasons = []
    declared = declared_torch(target)
    if declared is not None and toolchain.torch and not declared.contains(toolchain.torch, prereleases=True):
        reasons.append(f"it requires torch{declared}, the toolchain has torch {toolchain.torch}")
    reasons.append(f"its Gemma does not run there ({result['error']})")
    return "; ".join(reasons)


def declared_torch(target: Path):
    """The torch specifier that transformers in ``target`` declares (its ``torch`` extra, or a
    plain requirement), or None when it declares none."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.specifiers import SpecifierSet

    found = None
    for metadata in target.glob("transformers-*.dist-info/METADATA"):
        for line in metadata.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.startswith("Requires-Dist:"):
                continue
            try:
                requirement = Requirement(line.split(":", 1)[1].strip())
            except InvalidRequirement:
                continue
            if requirement.name != "torch" or not str(requirement.specifier):
                continue
            if requirement.marker is None or requirement.marker.evaluate({"extra": "torch"}):
                found = (found or SpecifierSet()) & requirement.specifier
    return found
