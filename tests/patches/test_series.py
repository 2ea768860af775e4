"""The series: patches/series lists the twelve codemods in SPEC §5 order, each self-describing."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from libcst.codemod import CodemodContext, VisitorBasedCodemodCommand

from patcher.errors import DriftError, PatcherError
from patcher.series import engine
from patches._base import VaccCodemod

SPEC_ORDER = [
    "library-imports",
    "mask-helpers",
    "rotary-embedding",
    "attention",
    "decoder-layer-forward",
    "pretrained-model",
    "mask-generation",
    "strided-slice",
    "prepare-inputs-for-generation",
    "quantize",
    "sequence-lengths",
    "config-imports",
]
SERIES = engine.load_series()


def test_series_is_spec_order() -> None:
    assert [c.NAME for c in SERIES] == SPEC_ORDER


@pytest.mark.parametrize("codemod", SERIES, ids=[c.NAME for c in SERIES])
def test_codemod_describes_itself(codemod: type[VaccCodemod]) -> None:
    assert issubclass(codemod, VisitorBasedCodemodCommand)
    assert codemod.__module__ == "patches." + codemod.NAME.replace("-", "_")
    assert isinstance(codemod.DESCRIPTION, str) and codemod.DESCRIPTION and "\n" not in codemod.DESCRIPTION
    assert codemod.TARGETS and all(isinstance(t, str) and t for t in codemod.TARGETS)
    assert codemod.SHAPES and all(isinstance(d, str) and d for d in codemod.SHAPES.values())
    assert codemod.FILE == (
        "configuration_gemma.py" if codemod.NAME == "config-imports" else "modeling_gemma.py"
    )
    codemod(CodemodContext())  # constructible the way libcst.tool constructs it


@pytest.mark.parametrize("codemod", SERIES, ids=[c.NAME for c in SERIES])
def test_module_docstring_names_every_shape(codemod: type[VaccCodemod]) -> None:
    doc = sys.modules[codemod.__module__].__doc__ or ""
    assert doc.startswith(codemod.NAME)
    for shape in codemod.SHAPES:
        assert f"``{shape}``" in doc, f"{codemod.NAME}: docstring does not name shape {shape!r}"


# -- the series file -------------------------------------------------------------------------


@pytest.fixture
def patches_dir(tmp_path: Path) -> Path:
    """A throwaway copy of patches/ (the codemod modules themselves still import from the package)."""
    copy = tmp_path / "patches"
    shutil.copytree(engine.PATCHES_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _edit_series(directory: Path, edit) -> None:
    series = directory / "series"
    series.write_text(edit(series.read_text(encoding="utf-8")), encoding="utf-8")


def test_copy_loads_like_the_original(patches_dir: Path) -> None:
    assert engine.load_series(patches_dir) == SERIES


def test_comments_and_blank_lines_are_allowed(patches_dir: Path) -> None:
    _edit_series(
        patches_dir, lambda text: "# header\n\n" + text.replace("quantize\n", "  quantize   # W8A16\n\n")
    )
    assert engine.load_series(patches_dir) == SERIES


def test_order_is_the_files(patches_dir: Path) -> None:
    _edit_series(
        patches_dir,
        lambda text: text.replace("quantize\n", "").replace(
            "library-imports\n", "quantize\nlibrary-imports\n"
        ),
    )
    names = [c.NAME for c in engine.load_series(patches_dir)]
    assert names[:2] == ["quantize", "library-imports"] and sorted(names) == sorted(SPEC_ORDER)


def test_duplicate_is_refused(patches_dir: Path) -> None:
    _edit_series(patches_dir, lambda text: text + "attention\n")
    with pytest.raises(PatcherError, match="'attention' twice"):
        engine.load_series(patches_dir)


def test_module_missing_from_series_is_refused(patches_dir: Path) -> None:
    _edit_series(patches_dir, lambda text: text.replace("strided-slice\n", ""))
    with pytest.raises(PatcherError, match=r"strided_slice\.py is not in patches/series"):
        engine.load_series(patches_dir)


def test_unlisted_new_module_is_refused(patches_dir: Path) -> None:
    (patches_dir / "rope_scaling.py").write_text('"""A codemod nobody listed."""\n', encoding="utf-8")
    with pytest.raises(PatcherError, match=r"rope_scaling\.py is not in patches/series"):
        engine.load_series(patches_dir)


def test_listed_but_missing_module_is_refused(patches_dir: Path) -> None:
    (patches_dir / "quantize.py").unlink()
    with pytest.raises(PatcherError, match=r"'quantize'.*quantize\.py is missing"):
        engine.load_series(patches_dir)


def test_private_modules_are_not_codemods(patches_dir: Path) -> None:
    (patches_dir / "_notes.py").write_text("", encoding="utf-8")
    assert engine.load_series(patches_dir) == SERIES


# -- the series as a whole -------------------------------------------------------------------


def test_every_drifting_codemod_is_reported_at_once() -> None:
    with pytest.raises(DriftError) as info:
        engine.run("x = 1\n", SERIES)
    lines = str(info.value).splitlines()
    assert [line.split(",")[0] for line in lines] == [f"drift: codemod {n}" for n in SPEC_ORDER[:-1]]


UPSTREAM_SHAPES = {
    "library-imports": ("relative-imports", "flash-attn-guard", "fx-wrap"),
    "mask-helpers": ("absent",),
    "rotary-embedding": ("position-forward", "unsqueeze"),
    "attention": ("three-classes",),
    "decoder-layer-forward": ("cache-position",),
    "pretrained-model": ("backend-flags",),
    "mask-generation": ("dynamic-cache", "head-cache-position", "head-tuple-cache"),
    "strided-slice": ("post-init",),
    "prepare-inputs-for-generation": ("cache-class-aware", "tuple-reorder-cache"),
    "quantize": ("no-quantize",),
    "sequence-lengths": ("argmax-modulo",),
    "config-imports": ("relative-imports",),
}
OUTPUT_SHAPES = {
    "library-imports": ("absolute-imports",),
    "mask-helpers": ("present",),
    "rotary-embedding": ("table", "gathered"),
    "attention": ("tuple-cache",),
    "decoder-layer-forward": ("tuple-outputs",),
    "pretrained-model": ("no-backends",),
    "mask-generation": ("tuple-cache", "head-tuple-cache"),
    "strided-slice": ("sliced",),
    "prepare-inputs-for-generation": ("tuple-cache", "tuple-reorder-cache"),
    "quantize": ("quantize",),
    "sequence-lengths": ("ne-sum",),
    "config-imports": ("absolute-imports",),
}


@pytest.mark.network
@pytest.mark.parametrize("version", ["4.38.0", "4.39.3", "4.40.2"])
def test_real_upstream_shapes_and_idempotence(version: str) -> None:
    """On real upstream every codemod meets its upstream shapes, then its own-output shapes."""
    from patcher.upstream.fetch import fetch

    upstream = fetch(version)
    for file, source in (
        ("modeling_gemma.py", upstream.modeling),
        ("configuration_gemma.py", upstream.configuration),
    ):
        once = engine.run(source, SERIES, file=file)
        twice = engine.run(once.code, SERIES, file=file)
        assert twice.code == once.code
        assert {r.codemod: r.shapes for r in once.reports} == {
            r.codemod: UPSTREAM_SHAPES[r.codemod] for r in once.reports
        }
        assert {r.codemod: r.shapes for r in twice.reports} == {
            r.codemod: OUTPUT_SHAPES[r.codemod] for r in twice.reports
        }
        assert all(r.added == r.removed == 0 for r in twice.reports)
