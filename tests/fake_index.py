"""A fake package index for offline tests of pins and upstream: tiny wheels and a fake pip.

``FakePip`` stands in for :func:`patcher.upstream.pypi.run_pip`: ``download`` writes a small
transformers wheel holding the two Gemma files into ``-d DEST``, counting calls, or fails the
way pip fails offline.
"""

from __future__ import annotations

import hashlib
import subprocess
import zipfile
from pathlib import Path

from patcher.upstream.pins import Pin

MODELING = b'"""Fake modeling_gemma."""\r\n\r\nclass GemmaModel:\r\n    pass\r\n'
CONFIGURATION = b'"""Fake configuration_gemma."""\n\nclass GemmaConfig:\n    pass\n'


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_wheel(
    dest: Path,
    version: str,
    modeling: bytes = MODELING,
    configuration: bytes = CONFIGURATION,
    extra: dict[str, bytes] | None = None,
) -> Path:
    """Write ``transformers-VERSION-py3-none-any.whl`` into ``dest`` with fixed zip metadata;
    ``extra`` adds members (``transformers/models/mistral/modeling_mistral.py``: bytes)."""
    path = dest / f"transformers-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in (
            ("transformers/__init__.py", f'__version__ = "{version}"\n'.encode()),
            ("transformers/models/gemma/modeling_gemma.py", modeling),
            ("transformers/models/gemma/configuration_gemma.py", configuration),
            *sorted((extra or {}).items()),
        ):
            archive.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data)
    return path


def wheel_bytes(tmp: Path, version: str, **files: bytes) -> bytes:
    tmp.mkdir(parents=True, exist_ok=True)
    return make_wheel(tmp, version, **files).read_bytes()


def pin_for(
    version: str, wheel: bytes, modeling: bytes = MODELING, configuration: bytes = CONFIGURATION
) -> Pin:
    return Pin(
        version=version,
        wheel=f"transformers-{version}-py3-none-any.whl",
        wheel_sha256=sha(wheel),
        files={"configuration_gemma.py": sha(configuration), "modeling_gemma.py": sha(modeling)},
    )


class FakePip:
    """Replacement for ``patcher.upstream.pypi.run_pip``; ``offline=True`` fails like pip without network."""

    def __init__(self, wheels: dict[str, bytes] | None = None, offline: bool = False) -> None:
        self.wheels = wheels or {}
        self.offline = offline
        self.calls: list[list[str]] = []

    def __call__(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(args))
        if self.offline:
            return subprocess.CompletedProcess(
                args,
                1,
                "",
                "WARNING: Retrying ... NewConnectionError\n"
                "ERROR: Could not find a version that satisfies the requirement transformers==1\n"
                "ERROR: No matching distribution found for transformers==1\n",
            )
        if args[0] == "download":
            version = next(a for a in args if a.startswith("transformers==")).split("==")[1]
            dest = Path(args[args.index("-d") + 1])
            (dest / f"transformers-{version}-py3-none-any.whl").write_bytes(self.wheels[version])
            return subprocess.CompletedProcess(args, 0, "Saved\n", "")
        if args[0] == "index":
            listed = ", ".join(sorted(self.wheels, reverse=True))
            return subprocess.CompletedProcess(
                args, 0, f"transformers (x)\nAvailable versions: {listed}\n", ""
            )
        raise AssertionError(f"unexpected pip call {args}")
