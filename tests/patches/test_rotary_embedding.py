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

UNSQUEEZE_APPLY = '''

# Copied from transformers.models.llama.modeling_llama.apply_rotary_pos_emb
def apply_rotary_pos_emb(q, k, cos, sin, position_ids=None, unsqueeze_dim=1):
    """Applies Rotary Position Embedding to the query and key tensors.

    Args:
        position_ids (`torch.Tensor`, *optional*):
            Deprecated and unused.
    """
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed
'''

GATHERED_APPLY = '''

def apply_rotary_pos_emb(q, k, cos, sin, position_ids, unsqueeze_dim=1):
    """Applies Rotary Position Embedding to the query and key tensors (vacc: table form).

    `cos` and `sin` are `[seq_len, head_dim]` tables; they are gathered at `position_ids`
    (`[batch_size, seq_len]`) and unsqueezed at `unsqueeze_dim` to broadcast over the heads.
    """
    cos = cos[position_ids].unsqueeze(unsqueeze_dim)
    sin = sin[position_ids].unsqueeze(unsqueeze_dim)
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed
'''

# Not a target either.
MLP = """

class GemmaMLP(nn.Module):
    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))
"""

UPSTREAM = INIT + LAZY_FORWARD + ROTATE_HALF + UNSQUEEZE_APPLY + MLP
OUTPUT = INIT + TABLE_FORWARD + ROTATE_HALF + GATHERED_APPLY + MLP


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
        pytest.param(
            INIT + TABLE_FORWARD + ROTATE_HALF + UNSQUEEZE_APPLY + MLP,
            OUTPUT,
            ("table", "unsqueeze"),
            id="unsqueeze-only",
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
    ],
)
def test_noop(source: str) -> None:
    assert_noop(RotaryEmbedding, source, ("table", "gathered"))


def test_unrelated_code_untouched() -> None:
    code, _ = apply(RotaryEmbedding, UPSTREAM)
    for unit in (INIT, ROTATE_HALF, MLP):
        assert unit in code


def test_idempotent() -> None:
    assert_idempotent(RotaryEmbedding, UPSTREAM)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        pytest.param(
            UPSTREAM.replace("class GemmaRotaryEmbedding", "class GemmaRoPE"),
            "GemmaRotaryEmbedding",
            id="class-renamed",
        ),
        pytest.param(ROTATE_HALF + UNSQUEEZE_APPLY, "GemmaRotaryEmbedding", id="class-removed"),
        pytest.param(
            UPSTREAM.replace("def forward(self, x, position_ids", "def _forward(self, x, position_ids"),
            "GemmaRotaryEmbedding.forward",
            id="forward-renamed",
        ),
        pytest.param(
            INIT
            + LAZY_FORWARD.replace("return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)", "return emb")
            + UNSQUEEZE_APPLY,
            "GemmaRotaryEmbedding.forward",
            id="forward-returns-one-value",
        ),
        pytest.param(
            INIT
            + LAZY_FORWARD.replace("def forward(self, x, position_ids, seq_len=None)", "def forward(self, x)")
            + UNSQUEEZE_APPLY,
            "GemmaRotaryEmbedding.forward",
            id="forward-without-positions",
        ),
        pytest.param(
            OUTPUT.replace("return cos[0], sin[0]", "return cos[0], sin[1]"),
            "GemmaRotaryEmbedding.forward",
            id="table-form-edited",
        ),
        pytest.param(INIT + LAZY_FORWARD + ROTATE_HALF, "apply_rotary_pos_emb", id="apply-removed"),
        pytest.param(
            UPSTREAM.replace("def apply_rotary_pos_emb(q, k,", "def apply_rotary_pos_emb(query, key,"),
            "apply_rotary_pos_emb",
            id="apply-params-renamed",
        ),
        pytest.param(
            UPSTREAM.replace("cos = cos.unsqueeze(unsqueeze_dim)", "cos = cos[:, None]"),
            "apply_rotary_pos_emb",
            id="apply-without-unsqueeze",
        ),
    ],
)
def test_drift(source: str, target: str) -> None:
    assert_drift(RotaryEmbedding, source, target)


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
