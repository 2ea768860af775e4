"""Model families: the Mistral series on the same codemods as Gemma's.

Gemma's lock must not move (``tests/test_lock.py``); here: the family notion (names mapped to
the codemods' vocabulary and back, exactly), the Mistral pins, that every Mistral release
applies (4.38-4.41 in the legacy shapes), what the family-specific rules do (Mistral's
sliding-window mask choice or argument dropped, no embedding normaliser; neither allowed for
Gemma), the command line's ``--model``,
and the mutation tier on Mistral files.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import mutants
import pytest

from patcher.cli import main
from patcher.errors import DriftError, UsageError
from patcher.series import engine
from patcher.series.generate import generate
from patcher.upstream import fetch, pins
from patcher.upstream.families import GEMMA, MISTRAL, family

GEMMA_PINS = pins.load_pins()
MISTRAL_PINS = pins.load_pins(model=MISTRAL)
MISTRAL_SERIES = engine.load_series(model=MISTRAL)
#: Mistral before 4.42 computes rotary tables by seq_len, takes padding_mask through **kwargs
#: and builds a legacy 4D sliding-window mask: the legacy (Llama 4.36-era) shapes of the codemods.
LEGACY = [v for v in MISTRAL_PINS if tuple(map(int, v.split(".")[:2])) < (4, 42)]
LEGACY_SHAPES = {
    "rotary-embedding": ("seq-len-tables", "gathered"),
    "attention": ("three-classes", "kv-seq-len"),
    "decoder-layer-forward": ("past-key-value",),
    "mask-generation": ("prepare-4d-mask", "unscaled-embedding", "head-tuple-cache"),
    "prepare-inputs-for-generation": ("cache-class-aware", "tuple-reorder-cache"),
}


@functools.cache
def upstream(version: str) -> fetch.Upstream:
    return fetch.fetch(version, MISTRAL_PINS, model=MISTRAL)


@functools.cache
def distinct() -> list[str]:
    first: dict[str, str] = {}
    for v, pin in MISTRAL_PINS.items():
        first.setdefault(pin.files[MISTRAL.modeling], v)
    return list(first.values())


# -- the family notion -------------------------------------------------------------------------
def test_names_map_to_the_codemods_vocabulary_and_back_exactly() -> None:
    text = "class MistralModel(MistralPreTrainedModel): MISTRAL_ATTENTION_CLASSES; .configuration_mistral"
    canonical = MISTRAL.to_canonical(text)
    assert (
        canonical == "class GemmaModel(GemmaPreTrainedModel): GEMMA_ATTENTION_CLASSES; .configuration_gemma"
    )
    assert MISTRAL.from_canonical(canonical) == text
    assert GEMMA.to_canonical(text) == text  # the canonical family maps to itself
    assert MISTRAL.prefix_of("x = 1\nclass MistralPreTrainedModel(PreTrainedModel):\n") == "Mistral"


def test_an_upstream_already_using_the_canonical_names_is_refused() -> None:
    source = upstream("4.45.2").modeling + "\n# see GemmaModel\n"
    with pytest.raises(UsageError, match="already uses Gemma"):
        engine.run(source, MISTRAL_SERIES, file=MISTRAL.modeling, model=MISTRAL)


def test_a_gemma_file_given_as_mistral_is_refused() -> None:
    gemma = fetch.fetch("4.45.2", GEMMA_PINS).modeling
    with pytest.raises(UsageError):
        engine.run(gemma, MISTRAL_SERIES, file=MISTRAL.modeling, model=MISTRAL)


def test_codemods_default_to_the_canonical_familys_traits() -> None:
    from dataclasses import asdict

    from patches._base import CANONICAL_TRAITS

    assert CANONICAL_TRAITS == asdict(GEMMA.traits)


def test_unknown_family() -> None:
    with pytest.raises(ValueError, match="unknown model family 'llama'"):
        family("llama")


def test_the_mistral_series_names_the_same_codemods_as_gemmas() -> None:
    """No copied codemod: both series run the very same classes."""
    assert [c.NAME for c in MISTRAL_SERIES] == [c.NAME for c in engine.load_series()]
    assert all(a is b for a, b in zip(MISTRAL_SERIES, engine.load_series(), strict=True))


# -- pins --------------------------------------------------------------------------------------
def test_mistral_pins_cover_every_gemma_release_from_the_same_wheels() -> None:
    assert list(MISTRAL_PINS) == list(GEMMA_PINS)
    for version, pin in MISTRAL_PINS.items():
        assert set(pin.files) == {"modeling_mistral.py", "configuration_mistral.py"}
        assert (pin.wheel, pin.wheel_sha256) == (GEMMA_PINS[version].wheel, GEMMA_PINS[version].wheel_sha256)


def test_mistral_pins_live_apart_from_gemmas(tmp_path: Path) -> None:
    pins.write_pin(MISTRAL_PINS["4.40.2"], tmp_path, model=MISTRAL)
    assert (tmp_path / "mistral" / "4.40.2.json").is_file()
    assert pins.load_pins(tmp_path) == {}  # gemma's directory holds no Mistral pin
    assert list(pins.load_pins(tmp_path, model=MISTRAL)) == ["4.40.2"]


def test_fetched_files_match_their_pins() -> None:
    up = upstream("5.24.0")
    assert up.model == "mistral" and "class MistralForCausalLM" in up.modeling
    assert "class MistralConfig" in up.configuration


# -- the series on every pinned release --------------------------------------------------------
@pytest.mark.parametrize("version", distinct())
def test_each_distinct_mistral_file_applies(version: str) -> None:
    out = generate(upstream(version))
    modeling = out.files["modeling_mistral_vacc.py"]
    assert set(out.files) == {
        "modeling_mistral_vacc.py",
        "configuration_mistral_vacc.py",
        "quantization_vacc.py",
    }
    assert not re.search("gemma", modeling, re.I)
    assert "from .configuration_mistral_vacc import MistralConfig" in modeling
    assert f"# Generated by patcher from transformers {version};" in modeling
    assert "patcher apply --model mistral --transformers" in modeling
    for name in ("_make_causal_mask", "def quantize", "iter_num", "_prepare_decoder_attention_mask"):
        assert name in modeling
    assert "MistralFlashAttention2" not in modeling and "MistralSdpaAttention" not in modeling
    compile(modeling, "modeling_mistral_vacc.py", "exec")
    shapes = {r.codemod: r.shapes for r in out.reports}
    assert (
        "unscaled-embedding" in shapes["mask-generation"]
        or "sliding-window-mask" in shapes["mask-generation"]
    )
    if "create_sliding_window_causal_mask" in upstream(version).modeling:
        assert "sliding-window-mask" in shapes["mask-generation"]
        assert "# vacc: dropped (sliding-window): mask_function = create_causal_mask if" in modeling
    if version in LEGACY:
        assert {k: shapes[k] for k in LEGACY_SHAPES} == LEGACY_SHAPES
        assert "# vacc: dropped (sliding-window): sliding_window=self.config.sliding_window" in modeling
        code = [x.strip() for x in modeling.splitlines() if not x.strip().startswith(("#", "from "))]
        assert not [x for x in code if "_prepare_4d_causal_attention_mask" in x]  # imported, not called
        assert "get_usable_length" not in modeling and "padding_mask" not in modeling.replace(
            '# vacc: dropped (padding-mask-warning): if "padding_mask" in kwargs: …', ""
        )


def test_every_release_applies() -> None:
    """4.38.0-4.41.2 in the legacy shapes (4 distinct files), the 102 later ones in the others: the
    README's numbers."""
    assert LEGACY == [v for v in MISTRAL_PINS if v < "4.42"] and len(LEGACY) == 13
    assert len({MISTRAL_PINS[v].files[MISTRAL.modeling] for v in LEGACY}) == 4
    assert len(MISTRAL_PINS) == 115


def test_unclaimed_upstream_lines_stay_byte_for_byte() -> None:
    """RMSNorm, MLP and the configuration are Mistral's own, untouched."""
    up = upstream("4.57.6")
    out = generate(up).files
    rmsnorm = re.search(r"class MistralRMSNorm\(.*?\n(?=\n\n)", up.modeling, re.S).group(0)
    assert rmsnorm in out["modeling_mistral_vacc.py"]
    mlp = re.search(r"class MistralMLP\(.*?\n(?=\n\n)", up.modeling, re.S).group(0)
    assert mlp in out["modeling_mistral_vacc.py"]
    body = up.configuration.split("class MistralConfig", 1)[1]
    assert body in out["configuration_mistral_vacc.py"]


# -- family-specific rules ---------------------------------------------------------------------
GEMMA_MASK = "causal_mask = create_causal_mask("
WINDOWED = (
    "mask_function = create_causal_mask if self.config.sliding_window is None else "
    "create_sliding_window_causal_mask\n        causal_mask = mask_function("
)


def test_the_sliding_window_rule_is_mistrals_only() -> None:
    """Gemma's upstream choosing a windowed mask would be a change to check: drift."""
    gemma = fetch.fetch("4.53.3", GEMMA_PINS).modeling
    assert gemma.count(GEMMA_MASK) == 1
    imports = "from ...masking_utils import create_causal_mask\n"
    assert gemma.count(imports) == 1
    windowed = gemma.replace(GEMMA_MASK, WINDOWED).replace(
        imports, "from ...masking_utils import create_causal_mask, create_sliding_window_causal_mask\n"
    )
    with pytest.raises(DriftError, match="mask-generation"):
        engine.run(windowed, engine.load_series(), file="modeling_gemma.py")
    # the same statement, with Mistral's traits: dropped by its rule
    code = engine.run(windowed, engine.load_series(), file="modeling_gemma.py", traits=MISTRAL.traits).code
    assert "# vacc: dropped (sliding-window)" in code


def test_a_missing_embedding_normaliser_is_drift_for_gemma_only() -> None:
    gemma = fetch.fetch("4.45.2", GEMMA_PINS).modeling
    line = next(x for x in gemma.splitlines() if x.strip() == "hidden_states = hidden_states * normalizer")
    without = gemma.replace(line + "\n", "")
    with pytest.raises(DriftError, match="no embedding normalisation"):
        engine.run(without, engine.load_series(), file="modeling_gemma.py")


def test_a_scaled_embedding_appearing_in_mistral_is_carried() -> None:
    source = upstream("4.45.2").modeling
    anchor = "        hidden_states = inputs_embeds\n"
    assert source.count(anchor) == 1
    extra = "        hidden_states = hidden_states * (self.config.hidden_size**0.5)\n"
    code = engine.run(
        source.replace(anchor, anchor + extra), MISTRAL_SERIES, file=MISTRAL.modeling, model=MISTRAL
    ).code
    assert anchor + extra in code


# -- command line ------------------------------------------------------------------------------
def test_apply_model_mistral(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["apply", "--model", "mistral", "--transformers", "5.24", "--out", str(tmp_path), "--json"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert set(report["upstream"]) == {"modeling_mistral.py", "configuration_mistral.py"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "configuration_mistral_vacc.py",
        "modeling_mistral_vacc.py",
        "quantization_vacc.py",
    ]


def test_list_model_mistral(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--model", "mistral", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["codemods"]
    assert "MistralModel.forward" in next(c for c in listed if c["name"] == "mask-generation")["targets"]
    assert {c["file"] for c in listed} == {"modeling_mistral.py", "configuration_mistral.py"}


USABLE_LENGTH = "            kv_seq_len += past_key_value.get_usable_length(kv_seq_len, self.layer_idx)\n"


def test_drift_is_exit_3_in_mistral_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """4.40.2 with its attention's legacy cache-length block changed: drift, named in Mistral's names."""
    up = upstream("4.40.2")
    assert up.modeling.count(USABLE_LENGTH) == 3  # the eager, FlashAttention2 and SDPA classes: the first
    first = up.modeling.index(USABLE_LENGTH)
    changed = (
        up.modeling[:first]
        + USABLE_LENGTH.replace("(kv_seq_len,", "(kv_seq_len + 1,")
        + up.modeling[first + len(USABLE_LENGTH) :]
    )
    (tmp_path / "modeling_mistral.py").write_text(changed, encoding="utf-8")
    (tmp_path / "configuration_mistral.py").write_text(up.configuration, encoding="utf-8")
    argv = ["apply", "--model", "mistral", "--upstream", str(tmp_path / "modeling_mistral.py")]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 3
    err = capsys.readouterr().err
    line = changed[:first].count("\n") - 6  # the `if past_key_value is not None:` above it
    assert f"codemod attention, target MistralAttention.forward at modeling_mistral.py:{line}:" in err
    assert "Gemma" not in err
    assert not (tmp_path / "o").exists()


def test_check_model_mistral_matches_its_lock(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--model", "mistral"]) == 0
    assert "upstream_pins/mistral/lock.json (115 generate, 0 drift)" in capsys.readouterr().out


def test_unknown_model_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["apply", "--model", "llama", "--transformers", "4.40"]) == 2


# -- the mutation tier on Mistral files --------------------------------------------------------
MUTATION_FILES = ("4.40.0", "4.45.0", "4.53.0", "5.24.0")


@pytest.mark.network
@pytest.mark.parametrize("version", MUTATION_FILES)
def test_sampled_mistral_mutants_are_refused_or_carried(
    version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mistral files, in the codemods' names and with Mistral's traits: a mutant inside a unit
    a codemod rewrites reaches the output or stops the run, never vanishes."""
    monkeypatch.setattr(mutants, "TRAITS", MISTRAL.traits)
    source = MISTRAL.to_canonical(upstream(version).modeling)
    generated = mutants.generate(f"mistral-{version}", source, MISTRAL_SERIES)
    sample = mutants.sample(generated, 12, 20240607)
    assert {m.kind for m in sample} == set(mutants.KINDS)
    outcomes = mutants.classify_all(sample, MISTRAL_SERIES)
    failed = sum(o.status in mutants.FAILURES for o in outcomes)
    assert failed == 0, mutants.failure_message(outcomes)


def test_a_mistral_file_without_model_mistral_says_which_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local = tmp_path / "modeling_mistral.py"
    local.write_text(upstream("5.0.0").modeling, encoding="utf-8")
    assert main(["apply", "--upstream", str(local), "--out", str(tmp_path / "o")]) == 2
    assert "defines MistralPreTrainedModel, not GemmaPreTrainedModel" in capsys.readouterr().err
    assert main(["apply", "--model", "mistral", "--upstream", str(local), "--out", str(tmp_path / "m")]) == 2
    assert "configuration_mistral.py" in capsys.readouterr().err  # the right family: its config is asked for
