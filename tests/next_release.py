"""Synthetic "next releases" for ``patcher update`` and the drift playbook: a fake package index
(``tests/fake_index.py``) serving real upstream files, as they are or with one unit reshaped.

The reshaped unit is ``GemmaModel.__init__`` without its ``self.post_init()`` call (as if
upstream moved that call out of the model's ``__init__``): only ``strided-slice`` anchors
there, so exactly one codemod drifts, at the line of ``__init__``.
"""

from __future__ import annotations

from pathlib import Path

from fake_index import FakePip, make_wheel

from patcher.series import lockfile
from patcher.series.lockfile import Lock
from patcher.upstream import pins, pypi
from patcher.upstream.cache import BlobCache
from patcher.upstream.pins import Pin

BASE = "5.24.0"  # the newest committed pin: the synthetic releases start from its files
POST_INIT = "        self.post_init()\n"


def without_post_init(modeling: str) -> str:
    """``modeling`` with the ``self.post_init()`` of ``GemmaModel.__init__`` removed."""
    start = modeling.index("class GemmaModel(")
    end = modeling.index("\nclass ", start + 1)
    at = modeling.index(POST_INIT, start)
    assert at < end, "GemmaModel.__init__ has no self.post_init() to remove"
    return modeling[:at] + modeling[at + len(POST_INIT) :]


def releases(*specs: tuple[str, bool]) -> dict[str, pypi.Release]:
    return {v: pypi.Release(v, yanked, "broken" if yanked else None) for v, yanked in specs}


class Index:
    """A tmp pins dir holding the committed pin of BASE and its lock entry, a tmp cache
    holding BASE's files, and a fake index serving wheels of new releases."""

    def __init__(self, root: Path, monkeypatch, modeling: str, configuration: str) -> None:
        self.root = root
        self.pins = root / "pins"
        self.cache = root / "cache"
        self.listed: dict[str, pypi.Release] = releases((BASE, False))
        self.modeling = modeling
        self.configuration = configuration
        monkeypatch.setenv("PATCHER_PINS_DIR", str(self.pins))
        monkeypatch.setenv("PATCHER_CACHE_DIR", str(self.cache))
        monkeypatch.setattr(pypi, "_releases_memo", None)
        self.pip = FakePip()
        self.wheels = self.pip.wheels  # (an empty dict given to FakePip would not be shared)
        monkeypatch.setattr(pypi, "run_pip", self.pip)
        monkeypatch.setattr(pypi, "pypi_releases", lambda: dict(self.listed))
        committed = pins.load_pins(pins.PINS_DIR)[BASE]
        pins.write_pin(committed, self.pins)
        blobs = BlobCache(self.cache)
        assert blobs.put(modeling.encode("utf-8")) == committed.files["modeling_gemma.py"]
        assert blobs.put(configuration.encode("utf-8")) == committed.files["configuration_gemma.py"]
        locked = lockfile.read_lock(lockfile.lock_path(pins.PINS_DIR))
        self.base_entry = locked.releases[BASE]
        lockfile.write_lock(Lock({BASE: self.base_entry}, locked.series_digest), self.lock)

    @property
    def lock(self) -> Path:
        return lockfile.lock_path(self.pins)

    def publish(self, version: str, modeling: str | None = None, *, yanked: bool = False) -> None:
        """List ``version`` on the index, its wheel holding ``modeling`` (default: BASE's)."""
        text = self.modeling if modeling is None else modeling
        folder = self.root / "wheels" / version
        folder.mkdir(parents=True)
        self.wheels[version] = make_wheel(
            folder, version, text.encode("utf-8"), self.configuration.encode("utf-8")
        ).read_bytes()
        self.listed[version] = pypi.Release(version, yanked, "broken" if yanked else None)

    def state(self) -> dict[str, bytes]:
        """Every file of the pins dir, by name: what a run changed."""
        return {p.name: p.read_bytes() for p in sorted(self.pins.iterdir())}

    def pinned(self) -> dict[str, Pin]:
        return pins.load_pins(self.pins)

    def downloads(self) -> list[str]:
        return [a.split("==")[1] for call in self.pip.calls for a in call if a.startswith("transformers==")]
