"""Upstream acquisition: the blob cache, fetching pinned wheels, installed and local files."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
from fake_index import CONFIGURATION, MODELING, FakePip, pin_for, sha, wheel_bytes

from patcher.errors import UpstreamError, UsageError
from patcher.upstream import fetch as upstream
from patcher.upstream import pypi
from patcher.upstream.cache import BlobCache, cache_root
from patcher.upstream.fetch import Upstream, fetch, from_files, from_installed
from patcher.upstream.pins import PINS_DIR, Pin, load_pins

VERSION = "4.40.2"


@pytest.fixture(autouse=True)
def isolated(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Unit tests use a fresh cache and never start pip; network tests opt out of the latter."""
    monkeypatch.setenv("PATCHER_CACHE_DIR", str(tmp_path / "cache"))
    if not request.node.get_closest_marker("network"):
        monkeypatch.setattr(pypi, "run_pip", FakePip(offline=True))


@pytest.fixture
def wheel(tmp_path: Path) -> bytes:
    return wheel_bytes(tmp_path / "wheels", VERSION)


@pytest.fixture
def pins(wheel: bytes) -> dict[str, Pin]:
    return {VERSION: pin_for(VERSION, wheel)}


@pytest.fixture
def index(monkeypatch: pytest.MonkeyPatch, wheel: bytes) -> FakePip:
    fake = FakePip({VERSION: wheel})
    monkeypatch.setattr(pypi, "run_pip", fake)
    return fake


def cache() -> BlobCache:
    return BlobCache()


# --- the blob cache -------------------------------------------------------------------------


def test_cache_root_follows_env(tmp_path: Path) -> None:
    assert cache_root() == tmp_path / "cache"
    assert upstream.cache_root() == tmp_path / "cache"


def test_blob_round_trip_is_content_addressed(tmp_path: Path) -> None:
    blobs = BlobCache(tmp_path / "c")
    digest = blobs.put(b"hello\r\n")
    assert digest == sha(b"hello\r\n")
    assert blobs.path(digest) == tmp_path / "c" / "blobs" / digest
    assert blobs.get(digest) == b"hello\r\n"
    assert blobs.put(b"hello\r\n") == digest  # idempotent
    assert sorted(p.name for p in (tmp_path / "c" / "blobs").iterdir()) == [digest]  # no temp files


def test_damaged_blob_reads_as_missing_and_is_deleted(tmp_path: Path) -> None:
    blobs = BlobCache(tmp_path / "c")
    digest = blobs.put(b"content")
    blobs.path(digest).write_bytes(b"conten")
    assert blobs.get(digest) is None
    assert not blobs.path(digest).exists()
    assert blobs.get("0" * 64) is None


def test_unwritable_cache_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(UpstreamError) as info:
        BlobCache(tmp_path / "file" / "c").put(b"x")
    assert "cannot write the cache at" in str(info.value)
    assert "PATCHER_CACHE_DIR" in str(info.value)


# --- fetch ----------------------------------------------------------------------------------


def test_cold_fetch_downloads_checks_and_caches(pins: dict[str, Pin], index: FakePip) -> None:
    messages: list[str] = []
    got = fetch(VERSION, pins, progress=messages.append)
    assert got == Upstream(
        version=VERSION,
        modeling=MODELING.decode(),
        configuration=CONFIGURATION.decode(),
        modeling_sha256=sha(MODELING),
        configuration_sha256=sha(CONFIGURATION),
        origin=f"pypi wheel transformers-{VERSION}-py3-none-any.whl",
    )
    assert "\r\n" in got.modeling  # exact text: no newline translation
    assert messages == [f"downloading transformers=={VERSION} ..."]
    assert len(index.calls) == 1
    assert cache().get(sha(MODELING)) == MODELING
    assert cache().get(sha(CONFIGURATION)) == CONFIGURATION


def test_warm_cache_works_offline_without_pip(pins: dict[str, Pin], index: FakePip) -> None:
    first = fetch(VERSION, pins)
    index.offline = True
    messages: list[str] = []
    assert fetch(VERSION, pins, progress=messages.append) == first
    assert len(index.calls) == 1  # only the cold fetch ran pip
    assert messages == []


def test_damaged_blob_is_fetched_again_never_used(pins: dict[str, Pin], index: FakePip) -> None:
    fetch(VERSION, pins)
    blob = cache().path(sha(MODELING))
    blob.write_bytes(b"class GemmaModel: tampered\n")
    messages: list[str] = []
    got = fetch(VERSION, pins, progress=messages.append)
    assert got.modeling == MODELING.decode()
    assert blob.read_bytes() == MODELING
    assert len(index.calls) == 2
    assert messages[0].startswith("cache entry for modeling_gemma.py of transformers 4.40.2 was damaged")


def test_one_missing_blob_refetches(pins: dict[str, Pin], index: FakePip) -> None:
    fetch(VERSION, pins)
    cache().path(sha(CONFIGURATION)).unlink()
    assert fetch(VERSION, pins).configuration == CONFIGURATION.decode()
    assert len(index.calls) == 2


def test_offline_and_cold_is_one_line_upstream_error(pins: dict[str, Pin], tmp_path: Path) -> None:
    with pytest.raises(UpstreamError) as info:
        fetch(VERSION, pins)
    message = str(info.value)
    assert message.startswith(
        f"cannot download transformers=={VERSION} (no network?) and it is not in the cache"
    )
    assert str(tmp_path / "cache") in message
    assert "connect once" in message
    assert "\n" not in message
    assert info.value.exit_code == 4


def test_wheel_failing_its_pin(pins: dict[str, Pin], index: FakePip) -> None:
    good = pins[VERSION]
    bad = Pin(good.version, good.wheel, "f" * 64, good.files)
    with pytest.raises(UpstreamError) as info:
        fetch(VERSION, {VERSION: bad})
    message = str(info.value)
    assert f"wheel {good.wheel} has sha256 {good.wheel_sha256}" in message
    assert f"says {'f' * 64}" in message
    assert not cache().blobs.exists()  # nothing cached from a wheel failing its pin


def test_file_failing_its_pin(pins: dict[str, Pin], index: FakePip) -> None:
    good = pins[VERSION]
    bad = Pin(good.version, good.wheel, good.wheel_sha256, {**good.files, "modeling_gemma.py": "e" * 64})
    with pytest.raises(UpstreamError) as info:
        fetch(VERSION, {VERSION: bad})
    assert f"modeling_gemma.py in {good.wheel} has sha256 {sha(MODELING)}" in str(info.value)
    assert f"says {'e' * 64}" in str(info.value)


def test_blob_for_another_file_is_not_accepted(pins: dict[str, Pin], index: FakePip) -> None:
    """A cache entry is trusted only if its content hashes to its name, whatever it claims."""
    blobs = cache()
    blobs.blobs.mkdir(parents=True)
    blobs.path(sha(MODELING)).write_bytes(CONFIGURATION)
    blobs.path(sha(CONFIGURATION)).write_bytes(CONFIGURATION)
    assert fetch(VERSION, pins).modeling == MODELING.decode()
    assert len(index.calls) == 1


def test_fetch_of_unpinned_release(pins: dict[str, Pin]) -> None:
    with pytest.raises(
        UsageError, match=r"transformers 4\.41\.0 is not pinned; run `patcher pin 4\.41\.0` first"
    ):
        fetch("4.41.0", pins)


def test_fetch_defaults_to_the_pins_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATCHER_PINS_DIR", str(tmp_path / "no-pins"))
    with pytest.raises(UsageError, match="not pinned"):
        fetch(VERSION)


# --- from_files -----------------------------------------------------------------------------


def test_from_files(tmp_path: Path) -> None:
    modeling = tmp_path / "modeling_gemma.py"
    modeling.write_bytes(MODELING)
    got = from_files(modeling)
    assert got == Upstream(
        None, MODELING.decode(), None, sha(MODELING), None, f"local file {modeling}", (str(modeling), None)
    )
    config = tmp_path / "configuration_gemma.py"
    config.write_bytes(CONFIGURATION)
    both = from_files(modeling, config)
    assert both.configuration == CONFIGURATION.decode()
    assert both.configuration_sha256 == sha(CONFIGURATION)
    assert both.origin == f"local file {modeling} and {config}"
    assert both.paths == (str(modeling), str(config))


def test_from_files_refuses_what_python_cannot_parse(tmp_path: Path) -> None:
    broken = tmp_path / "modeling_gemma.py"
    broken.write_text("class GemmaModel(:\n    pass\n")
    with pytest.raises(UsageError, match=r"modeling_gemma\.py:1: .*; give a valid Python file"):
        from_files(broken)


def test_from_files_refuses_missing_or_binary(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read upstream file .*nope.py: No such file"):
        from_files(tmp_path / "nope.py")
    binary = tmp_path / "modeling_gemma.py"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UsageError, match="is not UTF-8 text"):
        from_files(binary)


# --- from_installed -------------------------------------------------------------------------


def install_fake(site: Path, version: str, *, dist_info: bool = True, modeling: bytes = MODELING) -> Path:
    package = site / "transformers"
    (package / "models" / "gemma").mkdir(parents=True)
    (package / "__init__.py").write_text(f'__version__ = "{version}"\n')
    (package / "models" / "gemma" / "modeling_gemma.py").write_bytes(modeling)
    (package / "models" / "gemma" / "configuration_gemma.py").write_bytes(CONFIGURATION)
    if dist_info:
        meta = site / f"transformers-{version}.dist-info"
        meta.mkdir()
        (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: transformers\nVersion: {version}\n")
    return package


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.delitem(sys.modules, "transformers", raising=False)
    monkeypatch.syspath_prepend(str(site))
    return site


def test_from_installed_reads_the_pinned_files(site: Path, pins: dict[str, Pin]) -> None:
    package = install_fake(site, VERSION)
    got = from_installed(pins)
    assert got.version == VERSION
    assert got.modeling == MODELING.decode()
    assert got.configuration_sha256 == sha(CONFIGURATION)
    assert got.origin == f"installed transformers {VERSION} at {package}"
    assert "transformers" not in sys.modules  # located, never imported


def test_from_installed_version_from_init_without_dist_info(site: Path, pins: dict[str, Pin]) -> None:
    install_fake(site, VERSION, dist_info=False)
    assert from_installed(pins).version == VERSION


def test_from_installed_modified_file_fails_its_pin(site: Path, pins: dict[str, Pin]) -> None:
    install_fake(site, VERSION, modeling=MODELING + b"# local edit\n")
    with pytest.raises(UpstreamError) as info:
        from_installed(pins)
    assert "modeling_gemma.py has sha256" in str(info.value)
    assert f"reinstall transformers=={VERSION}" in str(info.value)


def test_from_installed_unpinned(site: Path, pins: dict[str, Pin]) -> None:
    install_fake(site, "4.41.0")
    with pytest.raises(UsageError) as info:
        from_installed(pins)
    assert "installed transformers 4.41.0" in str(info.value)
    assert "run `patcher pin 4.41.0` first" in str(info.value)


def test_from_installed_without_gemma(site: Path, pins: dict[str, Pin]) -> None:
    package = install_fake(site, "4.37.2")
    shutil.rmtree(package / "models" / "gemma")
    with pytest.raises(UsageError, match="has no models/gemma/.*Gemma first appears in transformers 4.38.0"):
        from_installed(pins)


def test_from_installed_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UsageError, match="transformers is not installed for .*--transformers 4.40"):
        from_installed({})


# --- the real index -------------------------------------------------------------------------


@pytest.mark.network
def test_real_fetch_matches_committed_pin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fetch 4.40.2 for real; blobs already in the user cache seed a private one to stay fast."""
    pinned = load_pins(PINS_DIR)[VERSION]
    monkeypatch.delenv("PATCHER_CACHE_DIR")
    user_cache = BlobCache()
    private = BlobCache(tmp_path / "private")
    for digest in pinned.files.values():
        if user_cache.path(digest).exists():
            private.blobs.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(user_cache.path(digest), private.path(digest))
    got = fetch(VERSION, {VERSION: pinned}, cache=private)
    assert got.modeling_sha256 == pinned.files["modeling_gemma.py"]
    assert sha(got.modeling.encode()) == pinned.files["modeling_gemma.py"]
    assert sha(got.configuration.encode()) == pinned.files["configuration_gemma.py"]
    assert "class GemmaForCausalLM" in got.modeling


@pytest.mark.network
def test_real_wheel_download_matches_committed_pin(tmp_path: Path) -> None:
    """The wheel itself, through the user's pip configuration, hashes to the pin."""
    pinned = load_pins(PINS_DIR)[VERSION]
    got = fetch(VERSION, {VERSION: pinned}, cache=BlobCache(tmp_path / "empty"))
    assert got.modeling_sha256 == pinned.files["modeling_gemma.py"]
