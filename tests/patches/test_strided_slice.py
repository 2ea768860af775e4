"""strided-slice: iter_num / insert_slice read in GemmaModel.__init__, slice after the norm (SPEC §4.8)."""

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
from patches.strided_slice import StridedSlice

# Not targets: must come through byte for byte.
NORM = """\
class GemmaRMSNorm(nn.Module):
    def forward(self, x):
        return x  # keep   me
"""
HEAD = """

class GemmaForCausalLM(GemmaPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.model = GemmaModel(config)

        # Initialize weights and apply final processing
        self.post_init()

    def forward(self, hidden_states):
        hidden_states = self.norm(hidden_states)  # not GemmaModel: not a target
        return hidden_states
"""

INIT_TOP = """

class GemmaModel(GemmaPreTrainedModel):
    def __init__(self, config: GemmaConfig):
        super().__init__(config)
        self.norm = GemmaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.gradient_checkpointing = False
"""
READS = """
        # vacc strided_slice: the prefill graph (insert_slice set, iter_num 0) keeps the last position only
        self.iter_num = getattr(config, "iter_num", 0)
        self.insert_slice = getattr(config, "insert_slice", 0)
"""
INIT_END = """
        # Initialize weights and apply final processing
        self.post_init()

    def forward(self, input_ids, output_hidden_states=None):
        hidden_states = self.embed_tokens(input_ids)
        for decoder_layer in self.layers:
            hidden_states = decoder_layer(hidden_states)[0]

        hidden_states = self.norm(hidden_states)
"""
SLICE = """\
        if self.insert_slice and self.iter_num == 0:
            hidden_states = hidden_states[:, -1:, :]
"""
FORWARD_END = """
        # add hidden states from the last decoder layer
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        return hidden_states
"""

UPSTREAM = NORM + INIT_TOP + INIT_END + FORWARD_END + HEAD
OUTPUT = NORM + INIT_TOP + READS + INIT_END + SLICE + FORWARD_END + HEAD


def test_post_init() -> None:
    assert_codemod(StridedSlice, UPSTREAM, OUTPUT, ("post-init",))


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(OUTPUT, id="sliced_noop"),
        pytest.param(
            OUTPUT.replace('"iter_num"', "'iter_num'").replace(
                "hidden_states[:, -1:, :]", "hidden_states[ :, -1 :, : ]"
            ),
            id="reformatted-own-output_noop",
        ),
    ],
)
def test_noop(source: str) -> None:
    assert_noop(StridedSlice, source, ("sliced",))


def test_unrelated_code_untouched() -> None:
    code, _ = apply(StridedSlice, UPSTREAM)
    for unit in (NORM, INIT_TOP, FORWARD_END, HEAD):
        assert unit in code


def test_idempotent() -> None:
    assert_idempotent(StridedSlice, UPSTREAM)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        pytest.param(
            UPSTREAM.replace("class GemmaModel(", "class GemmaTextModel("),
            "GemmaModel.__init__",
            id="model-renamed",
        ),
        pytest.param(NORM + HEAD, "GemmaModel.__init__", id="model-removed"),
        pytest.param(
            UPSTREAM.replace("    def forward(self, input_ids", "    def call(self, input_ids"),
            "GemmaModel.__init__",
            id="forward-renamed",
        ),
        pytest.param(
            UPSTREAM.replace(
                "        # Initialize weights and apply final processing\n        self.post_init()\n",
                "        self.init_weights()\n",
            ),
            "GemmaModel.__init__",
            id="no-post-init",
        ),
        pytest.param(
            UPSTREAM.replace(
                "        hidden_states = self.norm(hidden_states)\n\n        # add",
                "        hidden_states = self.final_norm(hidden_states)\n\n        # add",
            ),
            "GemmaModel.forward",
            id="norm-renamed",
        ),
        pytest.param(
            UPSTREAM.replace(
                "        hidden_states = self.norm(hidden_states)\n\n        # add",
                "        if True:\n            hidden_states = self.norm(hidden_states)\n\n        # add",
            ),
            "GemmaModel.forward",
            id="norm-not-top-level",
        ),
    ],
)
def test_drift(source: str, target: str) -> None:
    assert_drift(StridedSlice, source, target)


def test_half_applied_is_not_taken_for_sliced() -> None:
    """__init__ reads iter_num, forward has no slice: neither known shape, so drift or add the slice."""
    before = NORM + INIT_TOP + "        self.iter_num = 0\n" + INIT_END + FORWARD_END
    try:
        code, _ = apply(StridedSlice, before)
    except Drift:
        return
    assert "hidden_states[:, -1:, :]" in code and 'getattr(config, "insert_slice", 0)' in code


def test_config_reads_carry_their_comment() -> None:
    code, _ = apply(StridedSlice, UPSTREAM)
    assert "# vacc strided_slice:" in code


def test_formatting_insensitive() -> None:
    reformatted = (
        NORM
        + INIT_TOP.replace(
            "(config.hidden_size, eps=config.rms_norm_eps)",
            "(\n            config.hidden_size,\n            eps=config.rms_norm_eps,\n        )",
        )
        + INIT_END.replace("        # Initialize weights and apply final processing\n", "")
        + FORWARD_END.replace("        # add hidden states from the last decoder layer\n", "")
        + HEAD
    )
    assert_formatting_insensitive(StridedSlice, UPSTREAM, reformatted)


@pytest.mark.parametrize(
    "old, new",
    [
        pytest.param(
            "        super().__init__(config)\n        self.norm = GemmaRMSNorm(",
            "        super().__init__(config); self.norm = GemmaRMSNorm(",
            id="joined-statements",
        ),
        pytest.param(
            "        self.gradient_checkpointing = False\n\n"
            "        # Initialize weights and apply final processing\n"
            "        self.post_init()\n",
            "        self.gradient_checkpointing = False; self.post_init()\n",
            id="post-init-joined",
        ),
        pytest.param(
            "    def __init__(self, config: GemmaConfig):\n"
            "        super().__init__(config)\n"
            "        self.norm = GemmaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)\n"
            "        self.gradient_checkpointing = False\n\n"
            "        # Initialize weights and apply final processing\n"
            "        self.post_init()\n",
            "    def __init__(self, config: GemmaConfig): super().__init__(config); "
            "self.norm = GemmaRMSNorm(config.hidden_size, eps=config.rms_norm_eps); "
            "self.gradient_checkpointing = False; self.post_init()\n",
            id="one-line-init",
        ),
    ],
)
def test_formatting_insensitive_to_joined_statements(old: str, new: str) -> None:
    assert old in UPSTREAM
    assert_formatting_insensitive(StridedSlice, UPSTREAM, UPSTREAM.replace(old, new))
