"""Drift: a codemod meeting an upstream shape it does not know fails loudly, names itself,
the target, the shapes it knows and where it looked — and nothing is written."""

from __future__ import annotations

import re
from pathlib import Path

import libcst as cst
import pytest
from releases import fetch

from patcher.cli import main
from patcher.series import engine
from patches import _layout as lay
from patches import _shapes as s

pytestmark = pytest.mark.network

VERSION = "4.40.2"


@pytest.fixture
def upstream_files(tmp_path: Path):
    up = fetch(VERSION)
    config = tmp_path / "configuration_gemma.py"
    config.write_text(up.configuration)

    def write(modeling: str) -> list[str]:
        path = tmp_path / "modeling_gemma.py"
        path.write_text(modeling)
        return ["--upstream", str(path), "--config-upstream", str(config)]

    return up.modeling, write


def run_apply(argv: list[str], out: Path, capsys) -> tuple[int, str]:
    code = main(["apply", *argv, "--out", str(out)])
    return code, capsys.readouterr().err


MUTILATIONS = {
    # id: (old, new, codemod, target)
    "attention-class-renamed": (
        "class GemmaAttention(nn.Module):",
        "class GemmaSelfAttention(nn.Module):",
        "attention",
        "GemmaAttention",
    ),
    "rotary-forward-removed": (
        "    @torch.no_grad()\n    def forward(self, x, position_ids, seq_len=None):",
        "    @torch.no_grad()\n    def forward_unused(self, x, position_ids, seq_len=None):",
        "rotary-embedding",
        "GemmaRotaryEmbedding.forward",
    ),
    "layer-signature-changed": (
        "        use_cache: Optional[bool] = False,\n"
        "        cache_position: Optional[torch.LongTensor] = None,\n",
        "        use_cache: Optional[bool] = False,\n",
        "decoder-layer-forward",
        "GemmaDecoderLayer.forward",
    ),
    "model-body-restructured": (
        "        hidden_states = hidden_states * normalizer\n",
        "        hidden_states = hidden_states\n",
        "mask-generation",
        "GemmaModel.forward",
    ),
    "sequence-lengths-rewritten": (
        "sequence_lengths = torch.eq(input_ids, self.config.pad_token_id).int().argmax(-1) - 1",
        "sequence_lengths = input_ids.shape[-1] - 1",
        "sequence-lengths",
        "GemmaForSequenceClassification.forward",
    ),
}


@pytest.mark.parametrize("case", MUTILATIONS, ids=list(MUTILATIONS))
def test_mutilated_upstream_drifts_and_writes_nothing(case, upstream_files, tmp_path, capsys):
    modeling, write = upstream_files
    old, new, codemod, target = MUTILATIONS[case]
    assert old in modeling, "the test's anchor text is not in upstream any more"
    out = tmp_path / "out"
    code, err = run_apply(write(modeling.replace(old, new, 1)), out, capsys)
    assert code == 3
    lines = err.strip().splitlines()
    mine = [line for line in lines if f"codemod {codemod}, target {target}" in line]
    assert mine, err
    assert re.search(r"at modeling_gemma\.py:\d+", mine[0]), mine[0]
    assert "known shapes:" in mine[0]
    assert "Traceback" not in err
    assert not out.exists()


def test_every_drifting_codemod_is_reported_in_one_run(upstream_files, tmp_path, capsys):
    modeling, write = upstream_files
    for old, new, *_ in MUTILATIONS.values():
        modeling = modeling.replace(old, new, 1)
    code, err = run_apply(write(modeling), tmp_path / "out", capsys)
    assert code == 3
    reported = {m.group(1) for m in re.finditer(r"drift: codemod ([\w-]+),", err)}
    assert {case[2] for case in MUTILATIONS.values()} <= reported


def test_drift_line_points_at_the_upstream_line(upstream_files, tmp_path, capsys):
    modeling, write = upstream_files
    old, new, *_ = MUTILATIONS["model-body-restructured"]
    code, err = run_apply(write(modeling.replace(old, new, 1)), tmp_path / "out", capsys)
    line = int(re.search(r"modeling_gemma\.py:(\d+)", err).group(1))
    assert (
        modeling.splitlines()[line - 1].strip().startswith("def forward(")
        or "@" in modeling.splitlines()[line - 1]
    )


# -- every kind of mutilation, on three shape families ------------------------------------------
#: Three upstream families far apart: three attention classes (4.40), the eager attention
#: function with rotary in the model (4.48), and 5.x (scaled embedding, generic heads, `cache`).
FAMILIES = ["4.40.2", "4.48.0", "5.24.0"]
SERIES = {c.NAME: c for c in engine.load_series()}


def rename_everywhere(old: str, new: str):
    """A renamed unit, with every reference to it renamed too (as upstream would)."""
    return lambda source: re.sub(rf"\b{old}\b", new, source)


class _Edit(cst.CSTTransformer):
    """Apply ``edit`` to the method ``cls.method`` of a module."""

    def __init__(self, cls: str, method: str, edit) -> None:
        super().__init__()
        self.cls, self.method, self.edit = cls, method, edit

    def leave_ClassDef(self, original: cst.ClassDef, updated: cst.ClassDef) -> cst.ClassDef:
        if updated.name.value != self.cls:
            return updated
        body = []
        for stmt in updated.body.body:
            if isinstance(stmt, cst.FunctionDef) and stmt.name.value == self.method:
                stmt = self.edit(stmt)
            if stmt is not None:
                body.append(stmt)
        return updated.with_changes(body=updated.body.with_changes(body=body))


def edit_method(cls: str, method: str, edit):
    return lambda source: cst.parse_module(source).visit(_Edit(cls, method, edit)).code


def add_parameter(name: str):
    """The method takes one more keyword parameter (before ``**kwargs`` if it has one)."""

    def edit(fn: cst.FunctionDef) -> cst.FunctionDef:
        params = list(fn.params.params)
        params[-1] = params[-1].with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
        extra = cst.Param(
            cst.Name(name),
            default=cst.Integer("0"),
            equal=cst.AssignEqual(
                whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace("")
            ),
        )
        return fn.with_changes(params=fn.params.with_changes(params=[*params, extra]))  # fmt: skip

    return edit


def rename_variable(old: str, new: str):
    return lambda fn: lay.rename(fn, {old: cst.Name(new)})


def without_class(source: str, name: str) -> str:
    module = cst.parse_module(source)
    return module.with_changes(body=[x for x in module.body if s.stmt_name(x) != name]).code


def scores_by_einsum(source: str) -> str:
    """The attention scores computed another way (``einsum`` instead of ``matmul``)."""
    pattern = r"torch\.matmul\((query(?:_states)?), key_states\.transpose\(2, 3\)\)"
    new, count = re.subn(pattern, r'torch.einsum("bhqd,bhkd->bhqk", \1, key_states)', source)
    assert count == 1
    return new


def without_normalisation(source: str) -> str:
    new, count = re.subn(r"\n\s*hidden_states = hidden_states \* normalizer\n", "\n", source)
    assert count == 1
    return new


#: id -> (mutilation, families it applies to, codemod, target, nearest, text of the line named)
#: ``nearest`` None: the message names none; the line is the target's, or its nearest match's.
MUTILATIONS_BY_KIND = {
    "renamed-decoder-layer": (
        rename_everywhere("GemmaDecoderLayer", "GemmaBlock"),
        FAMILIES,
        "decoder-layer-forward",
        "GemmaDecoderLayer.forward",
        "GemmaBlock",
        "class GemmaBlock(",
    ),
    "renamed-rotary-class": (
        rename_everywhere("GemmaRotaryEmbedding", "GemmaRoPE"),
        FAMILIES,
        "rotary-embedding",
        "GemmaRotaryEmbedding",
        "GemmaRoPE",
        "class GemmaRoPE(",
    ),
    "renamed-model": (
        rename_everywhere("GemmaModel", "GemmaTextModel"),
        FAMILIES,
        "strided-slice",
        "GemmaModel.__init__",
        "GemmaTextModel",
        "class GemmaTextModel(",
    ),
    "renamed-rotary-function": (
        rename_everywhere("apply_rotary_pos_emb", "apply_rope"),
        FAMILIES,
        "rotary-embedding",
        "apply_rotary_pos_emb",
        "apply_rope",
        "def apply_rope(",
    ),
    "renamed-eager-function": (
        rename_everywhere("eager_attention_forward", "eager_attention"),
        ["4.48.0", "5.24.0"],
        "attention",
        "GemmaAttention.forward",
        "eager_attention",
        "def forward(",
    ),
    "renamed-rotary-forward": (
        edit_method(
            "GemmaRotaryEmbedding", "forward", lambda fn: fn.with_changes(name=cst.Name("forward_tables"))
        ),
        FAMILIES,
        "rotary-embedding",
        "GemmaRotaryEmbedding.forward",
        "GemmaRotaryEmbedding.forward_tables",
        "def forward_tables(",
    ),
    "removed-rotary-forward": (
        edit_method("GemmaRotaryEmbedding", "forward", lambda fn: None),
        FAMILIES,
        "rotary-embedding",
        "GemmaRotaryEmbedding.forward",
        None,
        "class GemmaRotaryEmbedding(",
    ),
    "removed-sequence-classifier": (
        lambda source: without_class(source, "GemmaForSequenceClassification"),
        ["4.40.2"],
        "sequence-lengths",
        "GemmaForSequenceClassification.forward",
        None,
        None,  # nothing left to point at: the message says the class is nowhere in the file
    ),
    "layer-signature-changed": (
        edit_method("GemmaDecoderLayer", "forward", add_parameter("layer_scale")),
        FAMILIES,
        "decoder-layer-forward",
        "GemmaDecoderLayer.forward",
        "forward(",
        "def forward(",
    ),
    "head-signature-changed": (
        edit_method("GemmaForCausalLM", "forward", add_parameter("temperature")),
        FAMILIES,
        "mask-generation",
        "GemmaForCausalLM.forward",
        "forward(",
        "def forward(",
    ),
    "layer-loop-restructured": (
        edit_method("GemmaModel", "forward", rename_variable("decoder_layer", "layer")),
        FAMILIES,
        "mask-generation",
        "GemmaModel.forward",
        None,
        # the statement at fault: the layer call that still passes the cache plumbing
        (
            "layer_outputs = self._gradient_checkpointing_func(",
            "hidden_states = layer(",
            "layer_outputs = layer(",
        ),
    ),
    "normalisation-removed": (
        without_normalisation,
        ["4.40.2", "4.48.0"],
        "mask-generation",
        "GemmaModel.forward",
        None,
        "def forward(",
    ),
}
CASES = [
    pytest.param(version, case, id=f"{version}-{case}")
    for case, (_, families, *_) in MUTILATIONS_BY_KIND.items()
    for version in families
]


@pytest.mark.parametrize(("version", "case"), CASES)
def test_drift_report_lets_a_maintainer_act(version: str, case: str, tmp_path: Path, capsys) -> None:
    mutilate, _, codemod, target, nearest, line_text = MUTILATIONS_BY_KIND[case]
    up = fetch(version)
    modeling = mutilate(up.modeling)
    assert modeling != up.modeling, "the mutilation changed nothing"
    (tmp_path / "modeling_gemma.py").write_text(modeling)
    (tmp_path / "configuration_gemma.py").write_text(up.configuration)
    out = tmp_path / "out"
    code, err = run_apply(["--upstream", str(tmp_path / "modeling_gemma.py")], out, capsys)
    assert code == 3, err
    assert "Traceback" not in err and not out.exists()
    lines = [line for line in err.splitlines() if line.startswith(f"patcher: drift: codemod {codemod}, ")]
    if target:
        lines = [line for line in lines if f", target {target} at " in line]
    assert len(lines) == 1, err
    line = lines[0]
    # the shapes the codemod knows, all of them
    assert f"(known shapes: {', '.join(SERIES[codemod].SHAPES)})" in line
    # where: file:line of upstream (or, for a unit removed without a trace, that it is nowhere)
    where = re.search(r" at modeling_gemma\.py:(\d+): ", line)
    if line_text:
        assert where, line
        texts = line_text if isinstance(line_text, tuple) else (line_text,)
        assert any(text in modeling.splitlines()[int(where.group(1)) - 1] for text in texts), line
    else:
        assert f" at modeling_gemma.py (no {target.split('.')[0]} in it): " in line, line
    # the nearest match, when the target is gone
    if nearest:
        assert re.search(rf"; nearest: {re.escape(nearest)}", line), line
    else:
        assert "; nearest:" not in line, line


@pytest.mark.network
@pytest.mark.parametrize("version", ["4.40.2", "4.48.0", "5.24.0"])
def test_scores_computed_another_way_are_carried(version: str, tmp_path: Path, capsys) -> None:
    """Upstream's attention scores are kept in upstream's words (in the forward, or inlined from
    the eager function), so computing them another way is carried into the output, not drift."""
    up = fetch(version)
    (tmp_path / "modeling_gemma.py").write_text(scores_by_einsum(up.modeling))
    (tmp_path / "configuration_gemma.py").write_text(up.configuration)
    out = tmp_path / "out"
    code, err = run_apply(["--upstream", str(tmp_path / "modeling_gemma.py")], out, capsys)
    assert code == 0, err
    assert (
        'torch.einsum("bhqd,bhkd->bhqk", query_states, key_states)'
        in (out / "modeling_gemma_vacc.py").read_text()
    )
