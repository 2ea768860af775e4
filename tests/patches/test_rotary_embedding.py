"""rotary-embedding: [seq_len, head_dim] cos/sin tables gathered by position_ids (SPEC §4.3)."""

from __future__ import annotations

import pytest
from codemod_cases import (
    apply,
    assert_codemod,
    assert_drift,
    assert_formatting_insensitive,
    assert_idempotent,
    assert_noop,
)

from patches._base import Drift
from patches.rotary_embedding import RotaryEmbedding

INIT = """\
class GemmaRotaryEmbedding(nn.Module):
    def __init__(self, dim, max_position_embeddings=2048, base=10000, device=None):
        super().__init__()

        self.dim = dim
        self.base = base
        self.register_buffer("inv_freq", None, persistent=False)
"""

LAZY_FORWARD = """
    @torch.no_grad()
    def forward(self, x, position_ids, seq_len=None):
        # x: [bs, num_attention_heads, seq_len, head_size]
        if self.inv_freq is None:
            self.inv_freq = 1.0 / (
                self.base ** (torch.arange(0, self.dim, 2, dtype=torch.int64, device=x.device).float() / self.dim)
            )
        inv_freq_expanded = self.inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1)
        position_ids_expanded = position_ids[:, None, :].float()
        device_type = x.device.type
        device_type = device_type if isinstance(device_type, str) and device_type != "mps" else "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            freqs = (inv_freq_expanded.float() @ position_ids_expanded.float()).transpose(1, 2)
            emb = torch.cat((freqs, freqs), dim=-1)
            cos = emb.cos()
            sin = emb.sin()
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)
"""  # noqa: E501

# The contract's table form: upstream's forward kept as _forward_at_positions, and a forward
# asking it for positions 0 .. seq_len-1.
KEPT_FORWARD = LAZY_FORWARD.replace(
    "def forward(self, x, position_ids", "def _forward_at_positions(self, x, position_ids"
)
TABLE_FORWARD = (
    KEPT_FORWARD
    + """
    def forward(self, x, position_ids=None, seq_len=None):
        # vacc: cos/sin tables [seq_len, head_dim] for positions 0 .. seq_len-1, computed by upstream's
        # forward (kept as _forward_at_positions); apply_rotary_pos_emb gathers them by position_ids
        if seq_len is None:
            seq_len = x.shape[-2]
        positions = torch.arange(seq_len, device=x.device, dtype=torch.int64)[None, :]
        cos, sin = self._forward_at_positions(x, positions)
        return cos[0], sin[0]
"""
)

# 4.41+: inv_freq computed in __init__ (a buffer), forward multiplies it with position_ids.
EAGER_INV_FREQ_FORWARD = """
    @torch.no_grad()
    def forward(self, x, position_ids):
        inv_freq_expanded = self.inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1)
        position_ids_expanded = position_ids[:, None, :].float()
        freqs = (inv_freq_expanded.float() @ position_ids_expanded.float()).transpose(1, 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype=x.dtype), emb.sin().to(dtype=x.dtype)
"""


EAGER_TABLE_FORWARD = (
    EAGER_INV_FREQ_FORWARD.replace(
        "def forward(self, x, position_ids):", "def _forward_at_positions(self, x, position_ids):"
    )
    + TABLE_FORWARD[len(KEPT_FORWARD) :]
)

# Not a target: must come through byte for byte.
ROTATE_HALF = '''

# Copied from transformers.models.llama.modeling_llama.rotate_half
def rotate_half(x):
    """Rotates half the hidden dims of the input."""
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2,   x1), dim=-1)  # keep   me
'''

# 4.38-4.5x: the unsqueezes of per-position tables, a `position_ids` parameter unused.
UNSQUEEZE_APPLY = """

# Copied from transformers.models.llama.modeling_llama.apply_rotary_pos_emb
def apply_rotary_pos_emb(q, k, cos, sin, position_ids=None, unsqueeze_dim=1):
    \"\"\"Applies Rotary Position Embedding to the query and key tensors.

    Args:
        position_ids (`torch.Tensor`, *optional*):
            Deprecated and unused.
    \"\"\"
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed
"""

# The same function edited in place: the two unsqueezes gather the table rows first, and
# `position_ids` loses its default; upstream's comment, docstring and other statements stay.
GATHERED_APPLY = """

# Copied from transformers.models.llama.modeling_llama.apply_rotary_pos_emb
def apply_rotary_pos_emb(q, k, cos, sin, position_ids, unsqueeze_dim=1):
    \"\"\"Applies Rotary Position Embedding to the query and key tensors.

    Args:
        position_ids (`torch.Tensor`, *optional*):
            Deprecated and unused.
    \"\"\"
    # vacc: cos/sin are [seq_len, head_dim] tables, gathered at position_ids
    cos = cos[position_ids].unsqueeze(unsqueeze_dim)
    sin = sin[position_ids].unsqueeze(unsqueeze_dim)
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed
"""

# Later releases: no `position_ids` parameter, and a decorator that would swap in a hub kernel
# with the ungathered signature.
HUB_APPLY = """

@use_kernel_forward_from_hub("rotary_pos_emb")
def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    \"\"\"Applies Rotary Position Embedding to the query and key tensors.

    Args:
        unsqueeze_dim (`int`, *optional*, defaults to 1):
            The dimension along which to unsqueeze cos and sin.
    \"\"\"
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed
"""
NO_POSITION_APPLY = HUB_APPLY.replace('@use_kernel_forward_from_hub("rotary_pos_emb")\n', "")

# Its output: the decorator gone, `position_ids` inserted after `sin`.
HUB_GATHERED_APPLY = """

# vacc: dropped (hub-kernel): @use_kernel_forward_from_hub("rotary_pos_emb")
def apply_rotary_pos_emb(q, k, cos, sin, position_ids, unsqueeze_dim=1):
    \"\"\"Applies Rotary Position Embedding to the query and key tensors.

    Args:
        unsqueeze_dim (`int`, *optional*, defaults to 1):
            The dimension along which to unsqueeze cos and sin.
    \"\"\"
    # vacc: cos/sin are [seq_len, head_dim] tables, gathered at position_ids
    cos = cos[position_ids].unsqueeze(unsqueeze_dim)
    sin = sin[position_ids].unsqueeze(unsqueeze_dim)
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed
"""
#: The same without the hub decorator upstream: no drop comment.
NO_HUB_GATHERED_APPLY = HUB_GATHERED_APPLY.replace(
    '# vacc: dropped (hub-kernel): @use_kernel_forward_from_hub("rotary_pos_emb")\n', ""
)

# The former template of the gathering form (another docstring): already gathered, so left alone.
TEMPLATE_APPLY = """

def apply_rotary_pos_emb(q, k, cos, sin, position_ids, unsqueeze_dim=1):
    \"\"\"Applies Rotary Position Embedding to the query and key tensors (vacc: table form).

    `cos` and `sin` are `[seq_len, head_dim]` tables; they are gathered at `position_ids`
    (`[batch_size, seq_len]`) and unsqueezed at `unsqueeze_dim` to broadcast over the heads.
    \"\"\"
    cos = cos[position_ids].unsqueeze(unsqueeze_dim)
    sin = sin[position_ids].unsqueeze(unsqueeze_dim)
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed
"""

# Not a target either.
MLP = """

class GemmaMLP(nn.Module):
    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))
"""

UPSTREAM = INIT + LAZY_FORWARD + ROTATE_HALF + UNSQUEEZE_APPLY + MLP
OUTPUT = INIT + TABLE_FORWARD + ROTATE_HALF + GATHERED_APPLY + MLP


def _with_apply(apply_fn: str) -> str:
    """A module around one form of apply_rotary_pos_emb, the rotary class in its table form."""
    return INIT + TABLE_FORWARD + ROTATE_HALF + apply_fn + MLP


@pytest.mark.parametrize(
    ("before", "after", "shapes"),
    [
        pytest.param(UPSTREAM, OUTPUT, ("position-forward", "unsqueeze"), id="position-forward+unsqueeze"),
        pytest.param(
            INIT + LAZY_FORWARD + ROTATE_HALF + GATHERED_APPLY + MLP,
            OUTPUT,
            ("position-forward", "gathered"),
            id="position-forward-only",
        ),
        pytest.param(
            INIT + EAGER_INV_FREQ_FORWARD + ROTATE_HALF + UNSQUEEZE_APPLY + MLP,
            INIT + EAGER_TABLE_FORWARD + ROTATE_HALF + GATHERED_APPLY + MLP,
            ("position-forward", "unsqueeze"),
            id="buffered-inv-freq",
        ),
        pytest.param(_with_apply(UNSQUEEZE_APPLY), OUTPUT, ("table", "unsqueeze"), id="unsqueeze-only"),
        pytest.param(
            _with_apply(
                UNSQUEEZE_APPLY.replace("position_ids=None, unsqueeze_dim", "position_ids, unsqueeze_dim")
            ),
            OUTPUT,
            ("table", "unsqueeze"),
            id="unsqueeze-position-ids-without-default",
        ),
        pytest.param(
            _with_apply(NO_POSITION_APPLY),
            _with_apply(NO_HUB_GATHERED_APPLY),
            ("table", "unsqueeze"),
            id="unsqueeze-position-ids-inserted",
        ),
        pytest.param(
            _with_apply(HUB_APPLY),
            _with_apply(HUB_GATHERED_APPLY),
            ("table", "unsqueeze"),
            id="hub-forward-decorator-dropped",
        ),
        pytest.param(
            _with_apply(HUB_APPLY.replace("@use_kernel_forward_from_hub", "@use_kernel_func_from_hub")),
            _with_apply(
                HUB_GATHERED_APPLY.replace("@use_kernel_forward_from_hub", "@use_kernel_func_from_hub")
            ),
            ("table", "unsqueeze"),
            id="hub-func-decorator-dropped",
        ),
        pytest.param(
            _with_apply(HUB_APPLY.replace('("rotary_pos_emb")', '(\n    "rotary_pos_emb"\n)')),
            _with_apply(HUB_GATHERED_APPLY.replace('("rotary_pos_emb")', "('rotary_pos_emb')")),
            ("table", "unsqueeze"),
            id="hub-decorator-wrapped-over-lines-dropped-as-one-comment-line",
        ),
        pytest.param(
            _with_apply(HUB_APPLY.replace("\n@use_kernel", "\n# rotary  (kept)\n@use_kernel")),
            _with_apply(
                HUB_GATHERED_APPLY.replace("\n# vacc: dropped", "\n# rotary  (kept)\n# vacc: dropped")
            ),
            ("table", "unsqueeze"),
            id="hub-decorator-dropped-comment-above-kept",
        ),
        pytest.param(
            _with_apply(
                HUB_APPLY.replace(
                    "    cos = cos.unsqueeze(unsqueeze_dim)\n",
                    "\n    # upstream's comment\n    cos = cos.unsqueeze(unsqueeze_dim)\n",
                )
            ),
            _with_apply(
                HUB_GATHERED_APPLY.replace(
                    "    # vacc: cos/sin", "\n    # upstream's comment\n    # vacc: cos/sin"
                )
            ),
            ("table", "unsqueeze"),
            id="comment-above-unsqueeze-kept",
        ),
        pytest.param(
            _with_apply(
                GATHERED_APPLY.replace(
                    "\ndef apply", '\n@use_kernel_func_from_hub("rotary_pos_emb")\ndef apply'
                )
            ),
            OUTPUT.replace(
                "\ndef apply",
                '\n# vacc: dropped (hub-kernel): @use_kernel_func_from_hub("rotary_pos_emb")\ndef apply',
            ),
            ("table", "gathered"),
            id="hub-decorator-on-gathered-form-dropped",
        ),
    ],
)
def test_rewrites(before: str, after: str, shapes: tuple[str, ...]) -> None:
    assert_codemod(RotaryEmbedding, before, after, shapes)


def test_frequencies_are_upstreams() -> None:
    """The rotary base/dimension stay wherever upstream keeps them (here: a config attribute):
    upstream's own position forward is kept, so its frequencies are too."""
    before = UPSTREAM.replace("self.base ** (", "self.config.rope_theta ** (")
    assert before != UPSTREAM
    code, _ = apply(RotaryEmbedding, before)
    assert code == OUTPUT.replace("self.base ** (", "self.config.rope_theta ** (")


# -- carried: what upstream's apply_rotary_pos_emb computes besides the unsqueezes reaches the output
EXTRA = "    q = q.to(cos.dtype)  # an upstream statement no rule names\n"
SIN_LINE = "    sin = sin.unsqueeze(unsqueeze_dim)\n"
GATHERED_SIN_LINE = "    sin = sin[position_ids].unsqueeze(unsqueeze_dim)\n"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param(
            _with_apply(UNSQUEEZE_APPLY.replace(SIN_LINE, SIN_LINE + EXTRA)),
            _with_apply(GATHERED_APPLY.replace(GATHERED_SIN_LINE, GATHERED_SIN_LINE + EXTRA)),
            id="extra-statement",
        ),
        pytest.param(
            _with_apply(HUB_APPLY.replace("    cos = cos.unsqueeze", EXTRA + "    cos = cos.unsqueeze")),
            _with_apply(HUB_GATHERED_APPLY.replace("    # vacc: cos/sin", EXTRA + "    # vacc: cos/sin")),
            id="extra-statement-before-the-unsqueezes",
        ),
        pytest.param(
            _with_apply(UNSQUEEZE_APPLY.replace("unsqueeze_dim=1)", "unsqueeze_dim=2)")),
            _with_apply(GATHERED_APPLY.replace("unsqueeze_dim=1)", "unsqueeze_dim=2)")),
            id="unsqueeze-dim-default-changed",
        ),
        pytest.param(
            _with_apply(NO_POSITION_APPLY.replace("unsqueeze_dim=1)", "unsqueeze_dim=-3)")),
            _with_apply(NO_HUB_GATHERED_APPLY.replace("unsqueeze_dim=1)", "unsqueeze_dim=-3)")),
            id="unsqueeze-dim-default-changed-position-ids-inserted",
        ),
        pytest.param(
            _with_apply(UNSQUEEZE_APPLY.replace("rotate_half(k) * sin", "rotate_half(k) * -sin")),
            _with_apply(GATHERED_APPLY.replace("rotate_half(k) * sin", "rotate_half(k) * -sin")),
            id="k-embed-changed",
        ),
    ],
)
def test_carried(before: str, after: str) -> None:
    """An upstream change outside the two unsqueezes is in the output, and the output differs
    from the unchanged one's."""
    assert_codemod(RotaryEmbedding, before, after, ("table", "unsqueeze"))
    assert apply(RotaryEmbedding, before)[0] not in (
        apply(RotaryEmbedding, _with_apply(UNSQUEEZE_APPLY))[0],
        apply(RotaryEmbedding, _with_apply(NO_POSITION_APPLY))[0],
    )


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(OUTPUT, id="table+gathered_noop"),
        pytest.param(
            INIT
            + TABLE_FORWARD.replace('"mps"', "'mps'")
            .replace("        if seq_len is None:", "        # c\n        if seq_len is None:")
            .replace("cos[0], sin[0]", "(cos[0], sin[0])")
            + ROTATE_HALF
            + GATHERED_APPLY.replace("return q_embed, k_embed", "return (q_embed, k_embed)")
            + MLP,
            id="reformatted-own-output_noop",
        ),
        pytest.param(_with_apply(HUB_GATHERED_APPLY), id="own-output-without-position-default_noop"),
        pytest.param(_with_apply(TEMPLATE_APPLY), id="former-template_noop"),
        pytest.param(
            _with_apply(GATHERED_APPLY.replace(GATHERED_SIN_LINE, GATHERED_SIN_LINE + EXTRA)),
            id="own-output-with-extra-statement_noop",
        ),
    ],
)
def test_noop(source: str) -> None:
    assert_noop(RotaryEmbedding, source, ("table", "gathered"))


def test_unrelated_code_untouched() -> None:
    code, _ = apply(RotaryEmbedding, UPSTREAM)
    for unit in (INIT, ROTATE_HALF, MLP):
        assert unit in code


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(UPSTREAM, id="unsqueeze"),
        pytest.param(_with_apply(HUB_APPLY), id="hub-decorator"),
        pytest.param(_with_apply(NO_POSITION_APPLY), id="no-position-ids"),
    ],
)
def test_idempotent(source: str) -> None:
    assert_idempotent(RotaryEmbedding, source)


COS_LINE = "    cos = cos.unsqueeze(unsqueeze_dim)\n"


@pytest.mark.parametrize(
    ("source", "target", "why"),
    [
        pytest.param(
            UPSTREAM.replace("class GemmaRotaryEmbedding", "class GemmaRoPE"),
            "GemmaRotaryEmbedding",
            "no module-level class",
            id="class-renamed",
        ),
        pytest.param(
            ROTATE_HALF + UNSQUEEZE_APPLY, "GemmaRotaryEmbedding", "no module-level class", id="class-removed"
        ),
        pytest.param(
            UPSTREAM.replace("def forward(self, x, position_ids", "def _forward(self, x, position_ids"),
            "GemmaRotaryEmbedding.forward",
            "has no forward",
            id="forward-renamed",
        ),
        pytest.param(
            INIT
            + LAZY_FORWARD.replace("return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)", "return emb")
            + UNSQUEEZE_APPLY,
            "GemmaRotaryEmbedding.forward",
            "neither upstream's",
            id="forward-returns-one-value",
        ),
        pytest.param(
            INIT
            + LAZY_FORWARD.replace("def forward(self, x, position_ids, seq_len=None)", "def forward(self, x)")
            + UNSQUEEZE_APPLY,
            "GemmaRotaryEmbedding.forward",
            "neither upstream's",
            id="forward-without-positions",
        ),
        pytest.param(
            OUTPUT.replace("return cos[0], sin[0]", "return cos[0], sin[1]"),
            "GemmaRotaryEmbedding.forward",
            "neither upstream's",
            id="table-form-edited",
        ),
        pytest.param(
            INIT + LAZY_FORWARD + ROTATE_HALF,
            "apply_rotary_pos_emb",
            "no module-level function",
            id="apply-removed",
        ),
        pytest.param(
            UPSTREAM.replace("def apply_rotary_pos_emb(q, k,", "def apply_rotary_pos_emb(query, key,"),
            "apply_rotary_pos_emb",
            "does not take (q, k, cos, sin",
            id="apply-params-renamed",
        ),
        # decorators: only the hub-kernel ones are known (and dropped)
        pytest.param(
            _with_apply(UNSQUEEZE_APPLY.replace("\ndef apply", "\n@torch.jit.script\ndef apply")),
            "apply_rotary_pos_emb",
            "unknown decorator @torch.jit.script",
            id="unknown-decorator",
        ),
        pytest.param(
            _with_apply(HUB_APPLY.replace("\ndef apply", "\n@torch.no_grad()\ndef apply")),
            "apply_rotary_pos_emb",
            "unknown decorator @torch.no_grad",
            id="hub-and-unknown-decorator",
        ),
        pytest.param(
            _with_apply(HUB_APPLY.replace("@use_kernel_forward_from_hub", "@use_kernel_from_hub")),
            "apply_rotary_pos_emb",
            "unknown decorator @use_kernel_from_hub",
            id="hub-like-decorator",
        ),
        pytest.param(
            _with_apply(GATHERED_APPLY.replace("\ndef apply", "\n@torch.jit.script\ndef apply")),
            "apply_rotary_pos_emb",
            "unknown decorator",
            id="unknown-decorator-on-gathered-form",
        ),
        # the two unsqueezes, each exactly once and exactly as known
        pytest.param(
            UPSTREAM.replace("cos = cos.unsqueeze(unsqueeze_dim)", "cos = cos[:, None]"),
            "apply_rotary_pos_emb",
            "once each",
            id="cos-unsqueeze-changed-to-indexing",
        ),
        pytest.param(
            _with_apply(UNSQUEEZE_APPLY.replace(COS_LINE, "")),
            "apply_rotary_pos_emb",
            "once each",
            id="cos-unsqueeze-missing",
        ),
        pytest.param(
            _with_apply(UNSQUEEZE_APPLY.replace(SIN_LINE, "")),
            "apply_rotary_pos_emb",
            "once each",
            id="sin-unsqueeze-missing",
        ),
        pytest.param(
            _with_apply(UNSQUEEZE_APPLY.replace(COS_LINE + SIN_LINE, "")),
            "apply_rotary_pos_emb",
            "once each",
            id="both-unsqueezes-missing",
        ),
        pytest.param(
            _with_apply(UNSQUEEZE_APPLY.replace("cos.unsqueeze(unsqueeze_dim)", "cos.unsqueeze(1)")),
            "apply_rotary_pos_emb",
            "once each",
            id="cos-unsqueeze-literal-dim",
        ),
        pytest.param(
            _with_apply(
                UNSQUEEZE_APPLY.replace("sin.unsqueeze(unsqueeze_dim)", "sin.unsqueeze(unsqueeze_dim + 1)")
            ),
            "apply_rotary_pos_emb",
            "once each",
            id="sin-unsqueeze-other-dim",
        ),
        pytest.param(
            _with_apply(
                UNSQUEEZE_APPLY.replace("unsqueeze_dim=1)", "dim=1)").replace(
                    ".unsqueeze(unsqueeze_dim)", ".unsqueeze(dim)"
                )
            ),
            "apply_rotary_pos_emb",
            "once each",
            id="unsqueeze-parameter-renamed",
        ),
        pytest.param(
            _with_apply(UNSQUEEZE_APPLY.replace(COS_LINE, COS_LINE + COS_LINE)),
            "apply_rotary_pos_emb",
            "once each",
            id="cos-unsqueezed-twice",
        ),
        pytest.param(
            _with_apply(UNSQUEEZE_APPLY.replace(COS_LINE, COS_LINE + COS_LINE + SIN_LINE)),
            "apply_rotary_pos_emb",
            "once each",
            id="unsqueezes-repeated",
        ),
        pytest.param(
            _with_apply(GATHERED_APPLY.replace("cos[position_ids]", "cos[position_ids + 1]")),
            "apply_rotary_pos_emb",
            "no rule accounts for `cos = cos[position_ids + 1]",
            id="gathered-line-changed",
        ),
        pytest.param(
            _with_apply(UNSQUEEZE_APPLY.replace(SIN_LINE, SIN_LINE + "    q = q[position_ids]\n")),
            "apply_rotary_pos_emb",
            "no rule accounts for `q = q[position_ids]`",
            id="position-ids-used-elsewhere",
        ),
    ],
)
def test_drift(source: str, target: str, why: str) -> None:
    assert why in assert_drift(RotaryEmbedding, source, target).found


# -- suspected bugs of the codemod, found while writing these tests ----------------------------


def test_cos_twice_and_sin_never_is_drift() -> None:
    source = _with_apply(UNSQUEEZE_APPLY.replace(SIN_LINE, COS_LINE))
    assert_drift(RotaryEmbedding, source, "apply_rotary_pos_emb")


def test_position_ids_after_a_defaulted_parameter_is_drift_not_a_crash() -> None:
    source = _with_apply(
        UNSQUEEZE_APPLY.replace("position_ids=None, unsqueeze_dim=1", "unsqueeze_dim=1, position_ids=None")
    )
    assert_drift(RotaryEmbedding, source, "apply_rotary_pos_emb")


def test_keyword_only_position_ids_gives_valid_code_or_drift() -> None:
    source = _with_apply(
        UNSQUEEZE_APPLY.replace("position_ids=None, unsqueeze_dim=1", "unsqueeze_dim=1, *, position_ids=None")
    )
    try:
        code, _ = apply(RotaryEmbedding, source)
    except Drift:
        return
    compile(code, "modeling_gemma_vacc.py", "exec")


def test_formatting_insensitive() -> None:
    reformatted = (
        INIT.replace('"inv_freq"', "'inv_freq'")
        + LAZY_FORWARD.replace(
            "self.inv_freq = 1.0 / (\n"
            "                self.base ** (torch.arange(0, self.dim, 2, dtype=torch.int64, device=x.device)"
            ".float() / self.dim)\n"
            "            )",
            "self.inv_freq = 1.0 / (self.base ** (torch.arange(0, self.dim, 2,\n"
            "                dtype=torch.int64, device=x.device).float() / self.dim))  # freqs",
        )
        + UNSQUEEZE_APPLY.replace("    cos = cos.unsqueeze", "    # moved comment\n    cos = cos.unsqueeze")
    )
    assert reformatted.count("# freqs") == 1
    assert_formatting_insensitive(RotaryEmbedding, INIT + LAZY_FORWARD + UNSQUEEZE_APPLY, reformatted)


# -- formatting sensitivity found while writing these tests ----------------------------------

ONE_LINE_LAZY = LAZY_FORWARD.replace(
    "        if self.inv_freq is None:\n            self.inv_freq = 1.0 / (\n",
    "        if self.inv_freq is None: self.inv_freq = 1.0 / (\n",
)


def test_one_line_lazy_if_is_only_formatting() -> None:
    assert ONE_LINE_LAZY != LAZY_FORWARD
    assert_formatting_insensitive(
        RotaryEmbedding, UPSTREAM, INIT + ONE_LINE_LAZY + ROTATE_HALF + UNSQUEEZE_APPLY + MLP
    )


def test_semicolon_joined_unsqueeze_is_only_formatting() -> None:
    joined = UPSTREAM.replace(
        "    cos = cos.unsqueeze(unsqueeze_dim)\n    sin = sin.unsqueeze(unsqueeze_dim)\n",
        "    cos = cos.unsqueeze(unsqueeze_dim); sin = sin.unsqueeze(unsqueeze_dim)\n",
    )
    assert joined != UPSTREAM
    assert_formatting_insensitive(RotaryEmbedding, UPSTREAM, joined)
