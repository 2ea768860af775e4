"""Every bad input and fault of SPEC §9, through the command line (issue 5): 110 cases.

Their successor for issue 9, ``test_reliability.py``, tries 141 more (hostile repository
files and caches, permissions, signals, limits, git, encodings, model families): 251 in all.

Each case asserts the documented exit code, one ``patcher:`` line on stderr that names the
problem and the fix, no traceback, and that nothing was written: the output directory (or
checkpoint) is byte for byte as it was, and no hidden staging directory is left beside it.

The upstream cases run against a fake package index (``tests/fake_index.py``) and a private
cache and pins directory, so they need no network; the damaged-cache case serves the real
4.40.2 upstream files from such a fake wheel, so that the re-fetched files really generate.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fake_index import FakePip, make_wheel, pin_for, sha, wheel_bytes
from releases import fetch

from patcher.cli import main
from patcher.upstream import fetch as upstream
from patcher.upstream import pypi
from patcher.upstream.cache import BlobCache
from patcher.upstream.fetch import Upstream
from patcher.upstream.pins import write_pin

VERSION = "4.40.2"


# -- helpers ----------------------------------------------------------------------------------------
def tree(root: Path) -> dict[str, bytes | None]:
    """Every file and directory under ``root`` (content for files), to prove nothing changed."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))
    }


def refused(capsys, code: int, expected: int, *fragments: str) -> str:
    """Assert a refusal: exit code, one error line holding ``fragments``, no traceback."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("patcher: ")]
    assert code == expected, err
    assert len(errors) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache, a working directory, and pip replaced by an offline fake."""
    monkeypatch.setenv("PATCHER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(pypi, "run_pip", FakePip(offline=True))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


# -- versions ---------------------------------------------------------------------------------------
BAD_SPECS = {
    # spec: (fragment naming the problem, fragment naming the fix)
    "": ("empty transformers version", "give major.minor"),
    " ": ("empty transformers version", "give major.minor"),
    "\t\n": ("empty transformers version", "give major.minor"),
    "latest": ("'latest' is not a version", "patcher pin --latest"),
    "LATEST": ("is not a version", "patcher pin --latest"),
    "newest": ("is not a version", "give major.minor"),
    "4": ("'4' is too vague", "give major.minor"),
    "5": ("too vague", "give major.minor"),
    "0": ("too vague", "give major.minor"),
    "4.40.x": ("no wildcards", "write 4.40"),
    "4.40.*": ("no wildcards", "write 4.40"),
    "4.x": ("no wildcards", "give major.minor"),
    "v4.40": ("drop the leading 'v'", "write 4.40"),
    "V4.40.2": ("drop the leading 'v'", "write 4.40.2"),
    "5.0.0rc1": ("is a pre-release", "e.g. 5.0.0"),
    "4.41.0b1": ("is a pre-release", "e.g. 4.41.0"),
    "5.0.0.dev0": ("is a pre-release", "e.g. 5.0.0"),
    "4.40.2.post1": ("not a plain release number", "give major.minor"),
    "4.40.2+vacc": ("not a plain release number", "give major.minor"),
    "1!4.40.2": ("not a plain release number", "give major.minor"),
    "4-40": ("not a plain release number", "give major.minor"),
    "4.40.2.1": ("has too many parts", "give major.minor"),
    "4.040": ("leading zero", "did you mean 4.40?"),
    "04.40.2": ("leading zero", "did you mean 4.40.2?"),
    "==4.40.2": ("is a requirement, not a version", "give major.minor"),
    ">=4.40": ("is a requirement, not a version", "give major.minor"),
    "~=4.40": ("is a requirement, not a version", "give major.minor"),
    "transformers==4.40.2": ("is not a transformers version", "give major.minor"),
    "garbage": ("'garbage' is not a transformers version", "give major.minor"),
    "None": ("is not a transformers version", "give major.minor"),
    "4..40": ("is not a transformers version", "give major.minor"),
    "4.40.": ("is not a transformers version", "give major.minor"),
    ".4.40": ("is not a transformers version", "give major.minor"),
    "4,40": ("is not a transformers version", "give major.minor"),
    "4.40 .1": ("is not a transformers version", "give major.minor"),
    "4.40.2 4.40.1": ("is not a transformers version", "give major.minor"),
    "-4.40": ("is not a transformers version", "give major.minor"),
    "../4.40": ("is not a transformers version", "give major.minor"),
    "4.40.2\x00": ("is not a transformers version", "give major.minor"),
    "４.４０": ("is not a transformers version", "give major.minor"),  # fullwidth digits
    "٤.٤٠": ("is not a transformers version", "give major.minor"),  # Arabic-Indic digits
    "4.40\u200b": ("is not a transformers version", "give major.minor"),  # zero-width space
    "4.40.2é": ("is not a transformers version", "give major.minor"),
    "🤗": ("is not a transformers version", "give major.minor"),
    "x" * 5000: ("…' is not a transformers version", "give major.minor"),
    "INSTALLED ": ("transformers is not installed", "--transformers 4.40"),
    # before Gemma
    "4.37.2": ("transformers 4.37.2 has no Gemma", "first appears in transformers 4.38.0"),
    "4.37": ("has no Gemma", "4.38.0"),
    "3.5": ("has no Gemma", "4.38.0"),
    "0.0": ("has no Gemma", "4.38.0"),
    # not pinned
    "4.41.5": ("transformers 4.41.5 is not pinned", "run `patcher pin 4.41.5` first"),
    "99.0.0": ("transformers 99.0.0 is not pinned", "run `patcher pin 99.0.0` first"),
    "99.0": ("no transformers 99.0.x release is pinned", "run `patcher pin 99.0.N`"),
    "6.0": ("no transformers 6.0.x release is pinned", "patcher pin 6.0.N"),
    "4.99": ("no transformers 4.99.x release is pinned", "patcher pin 4.99.N"),
    "9" * 300 + ".0": ("release is pinned", "patcher pin"),
}


@pytest.mark.parametrize("spec", BAD_SPECS, ids=[repr(s)[:24] for s in BAD_SPECS])
def test_bad_spec(spec: str, sandbox: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    if spec.strip().lower() == "installed":
        monkeypatch.setattr("importlib.util.find_spec", lambda name: None)  # no transformers here
    problem, fix = BAD_SPECS[spec]
    code = main(["apply", "--transformers", spec, "--out", "out"])
    line = refused(capsys, code, 2, problem, fix)
    assert len(line) < 300
    assert tree(sandbox) == {}


@pytest.mark.parametrize("command", ["diff", "install", "verify"])
def test_bad_spec_in_other_commands(command: str, sandbox: Path, capsys) -> None:
    (sandbox / "ckpt").mkdir()
    (sandbox / "ckpt" / "config.json").write_text('{"model_type": "gemma"}')
    before = tree(sandbox)
    extra = ["--weights", "ckpt"] if command == "install" else []
    code = main([command, "--transformers", "4.40.x", *extra])
    refused(capsys, code, 2, "no wildcards", "write 4.40")
    assert tree(sandbox) == before


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["apply"], ["one of the arguments --transformers --upstream is required", "patcher apply --help"]),
        (["apply", "--transformers"], ["expected one argument", "patcher apply --help"]),
        (["apply", "--transformers", "4.40", "--upstream", "x.py"], ["not allowed with", "--help"]),
        (["apply", "--transformers", "4.40", "--frobnicate"], ["unrecognized arguments", "--help"]),
        (["frobnicate"], ["invalid choice", "patcher --help"]),
        (["apply", "--transformers", "4.40", "--out", ""], ["--out is empty", "leave --out out"]),
        (["apply", "--transformers", "4.40", "--config-upstream", "c.py"], ["goes with --upstream"]),
        (["install", "--transformers", "4.40", "--weights", ""], ["--weights is empty", "checkpoint"]),
        (["pin"], ["give release versions to pin, or --latest"]),
    ],
)
def test_bad_usage_is_one_line(argv: list[str], fragments: list[str], sandbox: Path, capsys) -> None:
    refused(capsys, main(argv), 2, *fragments)
    assert tree(sandbox) == {}


# -- upstream: network, pins, cache ------------------------------------------------------------
@pytest.fixture
def fake_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: Path):
    """4.40.2 pinned in a private pins directory; ``serve(wheel)`` puts a wheel on the fake index."""
    pins = tmp_path / "pins"
    monkeypatch.setenv("PATCHER_PINS_DIR", str(pins))

    def serve(wheel: bytes | None, pin=None) -> FakePip:
        write_pin(pin or pin_for(VERSION, wheel), pins)
        fake = FakePip({VERSION: wheel} if wheel else {}, offline=wheel is None)
        monkeypatch.setattr(pypi, "run_pip", fake)
        return fake

    return serve


def test_no_network_and_nothing_cached(fake_release, sandbox: Path, tmp_path: Path, capsys) -> None:
    wheel = wheel_bytes(tmp_path / "w", VERSION)
    fake_release(None, pin_for(VERSION, wheel))
    code = main(["apply", "--transformers", VERSION, "--out", "out"])
    refused(
        capsys,
        code,
        4,
        "cannot download transformers==4.40.2 (no network?)",
        "connect once",
        "PATCHER_CACHE_DIR",
    )
    assert tree(sandbox) == {}
    assert not (tmp_path / "cache" / "blobs").exists() or not any((tmp_path / "cache" / "blobs").iterdir())


def test_no_network_with_real_pip(
    sandbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The same through the real pip, its index a dead local address (no network needed)."""
    monkeypatch.undo()  # the real run_pip, the real pins
    monkeypatch.setenv("PATCHER_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.chdir(sandbox)
    for name, value in {
        "PIP_CONFIG_FILE": os.devnull,  # no pip.conf: only the dead index below
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "2",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(name, raising=False)
    code = main(["apply", "--transformers", VERSION, "--out", "out"])
    refused(capsys, code, 4, "cannot download transformers==4.40.2", "connect once")
    assert tree(sandbox) == {}


def test_wheel_failing_its_pin(fake_release, sandbox: Path, tmp_path: Path, capsys) -> None:
    wheel = wheel_bytes(tmp_path / "w", VERSION)
    good = pin_for(VERSION, wheel)
    fake_release(wheel, pin=type(good)(good.version, good.wheel, "f" * 64, good.files))
    code = main(["apply", "--transformers", VERSION, "--out", "out"])
    refused(capsys, code, 4, f"has sha256 {sha(wheel)}", f"says {'f' * 64}", "check your package index")
    assert tree(sandbox) == {}
    assert tree(tmp_path / "cache") == {}  # nothing from that wheel is cached


def test_file_failing_its_pin(fake_release, sandbox: Path, tmp_path: Path, capsys) -> None:
    wheel = wheel_bytes(tmp_path / "w", VERSION)
    good = pin_for(VERSION, wheel)
    fake_release(
        wheel,
        pin=type(good)(
            good.version, good.wheel, good.wheel_sha256, {**good.files, "modeling_gemma.py": "e" * 64}
        ),
    )
    code = main(["apply", "--transformers", VERSION, "--out", "out"])
    refused(
        capsys, code, 4, "modeling_gemma.py in transformers-4.40.2", f"says {'e' * 64}", "restore it from git"
    )
    assert tree(sandbox) == {}


@pytest.fixture(scope="module")
def real() -> Upstream:
    """The real 4.40.2 upstream files, from the user cache (module scope: read before the
    function-scoped fixtures point the cache elsewhere)."""
    return fetch(VERSION)


@pytest.fixture
def real_wheel(tmp_path: Path, real: Upstream) -> bytes:
    """A wheel holding the real 4.40.2 upstream files."""
    up = real
    folder = tmp_path / "real-wheel"
    folder.mkdir()
    return make_wheel(folder, VERSION, up.modeling.encode(), up.configuration.encode()).read_bytes()


@pytest.mark.network
@pytest.mark.parametrize("damage", ["truncated", "edited", "emptied", "other-file"])
def test_damaged_cache_entry_is_detected_and_fetched_again(
    damage: str,
    fake_release,
    real_wheel: bytes,
    real: Upstream,
    sandbox: Path,
    tmp_path: Path,
    monkeypatch,
    capsys,
) -> None:
    monkeypatch.setenv("PATCHER_OUTPUT_CACHE", "0")
    up = real
    index = fake_release(
        real_wheel, pin_for(VERSION, real_wheel, up.modeling.encode(), up.configuration.encode())
    )
    assert main(["apply", "--transformers", VERSION, "--out", "first"]) == 0
    blob = BlobCache(tmp_path / "cache").path(up.modeling_sha256)
    data = blob.read_bytes()
    blob.write_bytes(
        {"truncated": data[:-100], "edited": data.replace(b"Gemma", b"Gamma", 1), "emptied": b"",
         "other-file": up.configuration.encode()}[damage]
    )  # fmt: skip
    capsys.readouterr()
    assert main(["apply", "--transformers", VERSION, "--out", "second"]) == 0
    assert "cache entry for modeling_gemma.py of transformers 4.40.2 was damaged; fetching it again" in (
        capsys.readouterr().err
    )
    assert len(index.calls) == 2  # the re-fetch
    assert blob.read_bytes() == data
    assert tree(sandbox / "second") == tree(sandbox / "first")


def test_damaged_cache_entry_and_no_network(fake_release, tmp_path: Path, sandbox: Path, capsys) -> None:
    wheel = wheel_bytes(tmp_path / "w", VERSION)
    index = fake_release(wheel)
    upstream.fetch(VERSION)  # fills the cache
    index.offline = True
    BlobCache(tmp_path / "cache").path(pin_for(VERSION, wheel).files["modeling_gemma.py"]).write_bytes(
        b"junk"
    )
    before = tree(sandbox)
    capsys.readouterr()
    code = main(["apply", "--transformers", VERSION, "--out", "out2"])
    refused(capsys, code, 4, "cannot download transformers==4.40.2 (no network?)", "connect once")
    assert tree(sandbox) == before


@pytest.mark.network
def test_damaged_output_cache_is_regenerated(
    real: Upstream, sandbox: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("PATCHER_CACHE_DIR", str(tmp_path / "cache2"))
    BlobCache(tmp_path / "cache2").put(real.modeling.encode())
    BlobCache(tmp_path / "cache2").put(real.configuration.encode())
    assert main(["apply", "--transformers", VERSION, "--out", "a"]) == 0
    for manifest in (tmp_path / "cache2" / "outputs").glob("*.json"):
        manifest.write_text("{ not json")
    assert main(["apply", "--transformers", VERSION, "--out", "b"]) == 0
    assert tree(sandbox / "a") == tree(sandbox / "b")


# -- output directories ---------------------------------------------------------------------------
@pytest.fixture
def output_cached(real: Upstream, sandbox: Path, tmp_path: Path) -> None:
    """The real 4.40.2 upstream files in the private cache (apply then works offline)."""
    for text in (real.modeling, real.configuration):
        BlobCache(tmp_path / "cache").put(text.encode())


@pytest.mark.network
def test_out_is_a_file(output_cached, sandbox: Path, capsys) -> None:
    (sandbox / "out").write_text("mine")
    code = main(["apply", "--transformers", VERSION, "--out", "out"])
    refused(capsys, code, 2, "--out out is a file, not a directory", "choose another --out")
    assert tree(sandbox) == {"out": b"mine"}


@pytest.mark.network
def test_out_under_a_file(output_cached, sandbox: Path, capsys) -> None:
    (sandbox / "parent").write_text("mine")
    code = main(["apply", "--transformers", VERSION, "--out", "parent/sub/out"])
    refused(
        capsys, code, 2, "cannot create parent/sub/out", "is a file, not a directory", "choose another --out"
    )
    assert tree(sandbox) == {"parent": b"mine"}


@pytest.mark.network
def test_out_that_cannot_be_written(output_cached, sandbox: Path, monkeypatch, capsys) -> None:
    """An unwritable directory (tests run as root, who may write anywhere: the write fails
    the way it fails for a user without permission)."""
    from patcher.deploy import atomicdir

    def denied(path: Path, text: str) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    assert main(["apply", "--transformers", VERSION, "--out", "out"]) == 0
    before = tree(sandbox)
    monkeypatch.setattr(atomicdir, "_write_file", denied)
    code = main(["apply", "--transformers", VERSION, "--out", "out"])
    refused(capsys, code, 2, "cannot write out", "Permission denied", "choose another --out")
    assert tree(sandbox) == before


@pytest.mark.network
@pytest.mark.parametrize(
    "foreign",
    [
        {"weights.bin": b"precious"},
        {"modeling_gemma_vacc.py": b"# my own edits\n"},
        {"configuration_gemma_vacc.py": b"# hand-written\n", "notes.txt": b"x"},
        {"sub/deep.txt": b"x"},
        {".hidden": b"x"},
    ],
    ids=["weights", "hand-edited-output", "hand-written-config", "subdirectory", "hidden-file"],
)
def test_out_holding_files_patcher_did_not_write(foreign, output_cached, sandbox: Path, capsys) -> None:
    out = sandbox / "out"
    for name, data in foreign.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    before = tree(sandbox)
    code = main(["apply", "--transformers", VERSION, "--out", "out"])
    refused(capsys, code, 2, "out holds files patcher did not write", "choose another --out", "--force")
    assert tree(sandbox) == before


@pytest.mark.network
def test_force_writes_beside_foreign_files_and_keeps_them(output_cached, sandbox: Path) -> None:
    out = sandbox / "out"
    out.mkdir()
    (out / "weights.bin").write_bytes(b"precious")
    (out / "modeling_gemma_vacc.py").write_text("# my own edits\n")
    assert main(["apply", "--transformers", VERSION, "--out", "out", "--force"]) == 0
    assert (out / "weights.bin").read_bytes() == b"precious"
    assert "Generated by patcher" in (out / "modeling_gemma_vacc.py").read_text()
    assert sorted(p.name for p in out.iterdir()) == [
        "configuration_gemma_vacc.py",
        "modeling_gemma_vacc.py",
        "quantization_vacc.py",
        "weights.bin",
    ]


# -- local upstream files ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "files, argv, fragments",
    [
        ({}, ["--upstream", "missing.py"], ["cannot read upstream file missing.py", "No such file"]),
        ({"d/x": b""}, ["--upstream", "d"], ["cannot read upstream file d", "Is a directory"]),
        ({"m.py": b"\xff\xfe\x00"}, ["--upstream", "m.py"], ["m.py is not UTF-8 text"]),
        (
            {"m.py": b"def (:\n"},
            ["--upstream", "m.py"],
            ["m.py:1: invalid syntax", "give a valid Python file"],
        ),
        ({"m.py": b"x = 1\x00\n"}, ["--upstream", "m.py"], ["m.py", "null bytes"]),
        (
            {"m.py": b"x = 1\n"},
            ["--upstream", "m.py"],
            ["no configuration_gemma.py given and none beside --upstream m.py", "--config-upstream FILE"],
        ),
        (
            {"m.py": b"x = 1\n"},
            ["--upstream", "m.py", "--config-upstream", "nope.py"],
            ["cannot read upstream file nope.py"],
        ),
        (
            {"m.py": b"x = 1\n", "c.py": b"class (\n"},
            ["--upstream", "m.py", "--config-upstream", "c.py"],
            ["c.py:1:", "give a valid Python file"],
        ),
        ({"m.py": b"x = 1\n"}, ["--upstream", ""], ["--upstream is empty"]),
        (  # Python reads it, libcst's parser does not (20,001 adjacent string literals)
            {"m.py": b"x = (" + b" ".join([b'"a"'] * 20001) + b")\n", "c.py": b"x = 1\n"},
            ["--upstream", "m.py", "--config-upstream", "c.py"],
            [
                "modeling_gemma.py does not parse as Python for the codemods (libcst)",
                "give a real upstream file",
            ],
        ),
    ],
)
def test_bad_local_upstream(files, argv, fragments, sandbox: Path, capsys) -> None:
    for name, data in files.items():
        (sandbox / name).parent.mkdir(parents=True, exist_ok=True)
        (sandbox / name).write_bytes(data)
    before = tree(sandbox)
    refused(capsys, main(["apply", *argv, "--out", "out"]), 2, *fragments)
    assert tree(sandbox) == before


# -- checkpoints (--weights) -----------------------------------------------------------------------
WEIGHTS = {
    "missing-config": ({"model.safetensors": b"w"}, ["ckpt has no config.json", "save_pretrained"]),
    "garbage-json": (
        {"config.json": b"{not json"},
        ["config.json is not a readable JSON object", "save_pretrained"],
    ),
    "json-array": ({"config.json": b"[1, 2]"}, ["not a readable JSON object (not an object)"]),
    "json-string": ({"config.json": b'"gemma"'}, ["not a readable JSON object"]),
    "empty-file": ({"config.json": b""}, ["not a readable JSON object"]),
    "not-utf8": ({"config.json": b"\xff\xfe{}"}, ["not a readable JSON object", "decode"]),
    "bom": ({"config.json": b'\xef\xbb\xbf{"model_type": "gemma"}'}, ["not a readable JSON object"]),
    "directory": (
        {"config.json/x": b""},
        ["cannot read ckpt/config.json: Is a directory", "save_pretrained"],
    ),
    "other-model": (
        {"config.json": b'{"model_type": "llama"}'},
        ["model_type 'llama', not 'gemma'", "--force"],
    ),
    "auto-map-elsewhere": (
        {"config.json": b'{"model_type": "gemma", "auto_map": {"AutoConfig": "mine.Config"}}'},
        ["maps AutoConfig to other code", "--force"],
    ),
}


@pytest.mark.parametrize("case", WEIGHTS)
def test_weights_without_a_usable_config(case: str, sandbox: Path, capsys) -> None:
    files, fragments = WEIGHTS[case]
    ckpt = sandbox / "ckpt"
    ckpt.mkdir()
    for name, data in files.items():
        (ckpt / name).parent.mkdir(parents=True, exist_ok=True)
        (ckpt / name).write_bytes(data)
    before = tree(sandbox)
    code = main(["install", "--transformers", VERSION, "--weights", "ckpt"])
    line = refused(capsys, code, 2, *fragments)
    assert "\\n" not in line
    assert tree(sandbox) == before


@pytest.mark.parametrize(
    "setup, fragments",
    [
        ("none", ["ckpt is not a directory", "--weights"]),
        ("file", ["ckpt is not a directory", "--weights"]),
    ],
)
def test_weights_that_is_no_directory(setup: str, fragments, sandbox: Path, capsys) -> None:
    if setup == "file":
        (sandbox / "ckpt").write_text("{}")
    before = tree(sandbox)
    refused(capsys, main(["install", "--transformers", VERSION, "--weights", "ckpt"]), 2, *fragments)
    assert tree(sandbox) == before


def test_weights_config_unreadable(sandbox: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """A config.json the user may not read (simulated: the tests run as root)."""
    ckpt = sandbox / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text('{"model_type": "gemma"}')
    read_bytes = Path.read_bytes

    def denied(self: Path) -> bytes:
        if self.name == "config.json":
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self)

    before = tree(sandbox)
    monkeypatch.setattr(Path, "read_bytes", denied)
    code = main(["install", "--transformers", VERSION, "--weights", "ckpt"])
    refused(capsys, code, 2, "cannot read ckpt/config.json: Permission denied", "save_pretrained")
    monkeypatch.undo()
    assert tree(sandbox) == before


def test_a_refusal_prints_nothing_on_stdout(sandbox: Path, capsys) -> None:
    """With --json, tools read stdout: a refusal leaves it empty."""
    code = main(["apply", "--transformers", "latest", "--json", "--out", "o"])
    assert code == 2 and capsys.readouterr().out == ""
