"""Pin files (format, loading, validation), pinning a release, and the committed pin data."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from fake_index import CONFIGURATION, MODELING, FakePip, pin_for, sha, wheel_bytes
from packaging.version import Version

from patcher.errors import UpstreamError, UsageError
from patcher.upstream import pins, pypi
from patcher.upstream.cache import BlobCache
from patcher.upstream.pins import Pin, load_pins, pin_release, write_pin


@pytest.fixture(autouse=True)
def offline(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Unit tests never reach the index or the user's cache; network tests opt out."""
    monkeypatch.setattr(pypi, "_releases_memo", None)
    if request.node.get_closest_marker("network"):
        return
    monkeypatch.setenv("PATCHER_CACHE_DIR", str(tmp_path / "cache"))

    def no_network(*args: object) -> None:
        raise AssertionError("unit test tried to reach the network")

    monkeypatch.setattr(pypi, "run_pip", no_network)
    monkeypatch.setattr(pypi, "_fetch_json", no_network)


def releases(*specs: tuple[str, bool]) -> dict[str, pypi.Release]:
    return {v: pypi.Release(v, yanked, "broken" if yanked else None) for v, yanked in specs}


SAMPLE = Pin(
    version="4.40.2",
    wheel="transformers-4.40.2-py3-none-any.whl",
    wheel_sha256="a" * 64,
    files={"modeling_gemma.py": "b" * 64, "configuration_gemma.py": "c" * 64},
)


def test_pin_file_bytes_are_deterministic(tmp_path: Path) -> None:
    path = write_pin(SAMPLE, tmp_path)
    assert path == tmp_path / "4.40.2.json"
    assert path.read_text() == (
        "{\n"
        '  "files": {\n'
        f'    "configuration_gemma.py": "{"c" * 64}",\n'
        f'    "modeling_gemma.py": "{"b" * 64}"\n'
        "  },\n"
        '  "version": "4.40.2",\n'
        '  "wheel": "transformers-4.40.2-py3-none-any.whl",\n'
        f'  "wheel_sha256": "{"a" * 64}"\n'
        "}\n"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["4.40.2.json"]  # no temp file left behind


def test_round_trip_and_version_order(tmp_path: Path) -> None:
    for version in ["4.100.0", "4.39.1", "5.0.0", "4.38.0", "4.40.10", "4.40.2"]:
        write_pin(Pin(version, f"transformers-{version}-py3-none-any.whl", "a" * 64, SAMPLE.files), tmp_path)
    loaded = load_pins(tmp_path)
    assert list(loaded) == ["4.38.0", "4.39.1", "4.40.2", "4.40.10", "4.100.0", "5.0.0"]
    assert loaded["4.40.2"] == Pin("4.40.2", "transformers-4.40.2-py3-none-any.whl", "a" * 64, SAMPLE.files)


def test_load_ignores_lock_non_json_and_temp_files(tmp_path: Path) -> None:
    write_pin(SAMPLE, tmp_path)
    (tmp_path / "lock.json").write_text('{"anything": 1}\n')
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "README").write_text("x")
    (tmp_path / ".4.41.0.abc.json").write_text("{")
    assert list(load_pins(tmp_path)) == ["4.40.2"]


def test_missing_directory_has_no_pins(tmp_path: Path) -> None:
    assert load_pins(tmp_path / "nope") == {}


def test_env_var_overrides_pins_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATCHER_PINS_DIR", str(tmp_path))
    write_pin(SAMPLE)
    assert (tmp_path / "4.40.2.json").exists()
    assert list(load_pins()) == ["4.40.2"]


def _sample_data() -> dict:
    return json.loads(SAMPLE.to_json())


@pytest.mark.parametrize(
    ("name", "mutate", "fragment"),
    [
        ("4.40.2.json", lambda d: "{not json", "not readable JSON"),
        ("4.40.2.json", lambda d: {**d, "version": "4.40.1"}, "it pins '4.40.1' but is named 4.40.2.json"),
        ("4.40.2.json", lambda d: {k: v for k, v in d.items() if k != "wheel"}, "expected exactly the keys"),
        ("4.40.2.json", lambda d: {**d, "extra": 1}, "expected exactly the keys"),
        ("4.40.2.json", lambda d: {**d, "wheel_sha256": "A" * 64}, "is not a lowercase hex sha256"),
        ("4.40.2.json", lambda d: {**d, "wheel_sha256": "ab"}, "is not a lowercase hex sha256"),
        (
            "4.40.2.json",
            lambda d: {**d, "wheel": "x.tar.gz"},
            "is not the file name of a transformers 4.40.2 wheel",
        ),
        ("4.40.2.json", lambda d: {**d, "files": {"modeling_gemma.py": "b" * 64}}, "files must name exactly"),
        ("notes.json", lambda d: d, "its name is not <version>.json"),
    ],
)
def test_invalid_pin_files_are_refused(tmp_path: Path, name: str, mutate, fragment: str) -> None:
    data = mutate(_sample_data())
    (tmp_path / name).write_text(data if isinstance(data, str) else json.dumps(data))
    with pytest.raises(UsageError) as info:
        load_pins(tmp_path)
    assert fragment in str(info.value)
    assert "restore it from git" in str(info.value)
    assert "\n" not in str(info.value)


# --- pin_release, offline against a fake index ---------------------------------------------


def test_pin_release_records_digests_and_caches_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = wheel_bytes(tmp_path / "w", "4.40.2")
    fake = FakePip({"4.40.2": wheel})
    monkeypatch.setattr(pypi, "run_pip", fake)
    monkeypatch.setattr(pypi, "pypi_releases", lambda: releases(("4.40.2", False)))
    cache = BlobCache(tmp_path / "cache")
    pin = pin_release("4.40.2", tmp_path / "pins", cache=cache)
    assert pin == pin_for("4.40.2", wheel)
    assert load_pins(tmp_path / "pins") == {"4.40.2": pin}
    assert cache.get(sha(MODELING)) == MODELING
    assert cache.get(sha(CONFIGURATION)) == CONFIGURATION
    assert fake.calls[0][:3] == ["download", "--no-deps", "--only-binary=:all:"]
    assert "transformers==4.40.2" in fake.calls[0]


def test_pin_release_default_cache_is_the_env_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pypi, "run_pip", FakePip({"4.40.2": wheel_bytes(tmp_path / "w", "4.40.2")}))
    monkeypatch.setattr(pypi, "pypi_releases", lambda: releases(("4.40.2", False)))
    pin_release("4.40.2", tmp_path / "pins")
    assert (tmp_path / "cache" / "blobs" / sha(MODELING)).read_bytes() == MODELING


@pytest.mark.parametrize(
    ("version", "fragment"),
    [
        ("4.46.0", "transformers 4.46.0 is yanked on PyPI (broken); pin another release"),
        ("4.99.0", "transformers 4.99.0 is not a release on PyPI"),
        ("5.0.0rc1", "pre-release"),
        ("4.37.2", "Gemma first appears in transformers 4.38.0"),
        ("4.40", "give major.minor.patch"),
    ],
)
def test_pin_release_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str, fragment: str
) -> None:
    monkeypatch.setattr(pypi, "pypi_releases", lambda: releases(("4.46.0", True), ("5.0.0rc1", False)))
    with pytest.raises(UsageError) as info:
        pin_release(version, tmp_path / "pins")
    assert fragment in str(info.value)
    assert not (tmp_path / "pins").exists()


def test_pin_release_without_json_api_warns_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(pypi, "run_pip", FakePip({"4.40.2": wheel_bytes(tmp_path / "w", "4.40.2")}))
    monkeypatch.setattr(pypi, "_fetch_json", _unreachable)
    pin_release("4.40.2", tmp_path / "pins")
    err = capsys.readouterr().err
    assert "cannot check whether transformers 4.40.2 is yanked" in err
    assert "no route" in err
    assert (tmp_path / "pins" / "4.40.2.json").exists()


def test_pin_release_offline_is_an_upstream_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pypi, "run_pip", FakePip(offline=True))
    monkeypatch.setattr(pypi, "pypi_releases", lambda: releases(("4.40.2", False)))
    with pytest.raises(UpstreamError) as info:
        pin_release("4.40.2", tmp_path / "pins")
    assert str(info.value) == (
        "pip could not reach the package index for transformers==4.40.2 "
        "(no network? check your proxy and index settings)"
    )
    assert not (tmp_path / "pins").exists()


def test_pin_release_reports_pips_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(args: list[str]) -> subprocess.CompletedProcess[str]:
        stderr = "ERROR: no version\nERROR: No matching distribution found for transformers==4.40.9"
        return subprocess.CompletedProcess(args, 1, "", stderr)

    monkeypatch.setattr(pypi, "run_pip", missing)
    monkeypatch.setattr(pypi, "_fetch_json", _unreachable)
    with pytest.raises(UpstreamError) as info:
        pin_release("4.40.9", tmp_path / "pins")
    assert str(info.value) == (
        "pip could not download transformers==4.40.9: No matching distribution found for transformers==4.40.9"
    )


def _unreachable(url: str) -> dict:
    import urllib.error

    raise urllib.error.URLError("no route to host")


def test_latest_release_skips_yanked_and_pre_releases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        pypi,
        "pypi_releases",
        lambda: releases(("5.9.0", False), ("5.10.0", True), ("5.11.0rc1", False), ("4.57.6", False)),
    )
    assert pins.latest_release() == "5.9.0"


def test_latest_release_falls_back_to_pip_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(pypi, "_fetch_json", _unreachable)
    monkeypatch.setattr(
        pypi, "run_pip", FakePip({"5.9.0": b"", "5.10.4": b"", "6.0.0rc1": b"", "4.57.6": b""})
    )
    assert pins.latest_release() == "5.10.4"
    assert "pip index versions" in capsys.readouterr().err


def test_latest_release_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pypi, "_fetch_json", _unreachable)
    monkeypatch.setattr(pypi, "run_pip", FakePip(offline=True))
    with pytest.raises(UpstreamError, match=r"cannot list transformers releases \(no network\?\)"):
        pins.latest_release()


# --- the committed pin data ------------------------------------------------------------------

YANKED = {"4.46.0", "4.52.0", "4.57.0", "5.10.0"}


def test_committed_pins_cover_every_release_from_gemma_on() -> None:
    committed = load_pins(pins.PINS_DIR)
    assert len(committed) >= 115
    versions = [Version(v) for v in committed]
    assert versions[0] == Version("4.38.0")
    assert not YANKED & set(committed)
    assert not any(v.is_prerelease for v in versions)
    for pin in committed.values():
        assert pin.wheel == f"transformers-{pin.version}-py3-none-any.whl"
        assert (pins.PINS_DIR / f"{pin.version}.json").read_text() == pin.to_json()
    first_115 = [p for v, p in committed.items() if Version(v) <= Version("5.24.0")]
    assert len(first_115) == 115
    assert len({p.files["modeling_gemma.py"] for p in first_115}) == 40


@pytest.mark.network
def test_real_index_knows_yanked_releases_and_the_latest() -> None:
    with pytest.raises(UsageError, match="4.46.0 is yanked"):
        pin_release("4.46.0")
    assert Version(pins.latest_release()) >= Version("5.24.0")
