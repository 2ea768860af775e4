"""pretrained-model: GemmaPreTrainedModel declares no backend/cache-class/compile support (SPEC §4.6)."""

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
from patches.pretrained_model import PretrainedModel

# Not targets: must come through byte for byte.
BEFORE_CLASS = '''\
GEMMA_START_DOCSTRING = r"""
    This model inherits from [`PreTrainedModel`].
"""


@add_start_docstrings(
    "The bare Gemma Model outputting raw hidden-states without any specific head on top.",
    GEMMA_START_DOCSTRING,
)
'''
AFTER_CLASS = """

class GemmaModel(GemmaPreTrainedModel):
    _supports_sdpa = True  # not GemmaPreTrainedModel: not a target
"""

KEPT = """\
class GemmaPreTrainedModel(PreTrainedModel):
    config_class = GemmaConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _keep_in_fp32_modules = ["inv_freq", "rotary_emb", "cos_cached", "sin_cached"]
    _no_split_modules = ["GemmaDecoderLayer"]
    _skip_keys_device_placement = ["past_key_values", "causal_mask"]
"""

INIT_WEIGHTS = """
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(mean=0.0, std=std)  # keep   me
"""

HOOKS = """
    def _setup_cache(self, cache_cls, max_batch_size, max_cache_len: Optional[int] = None):
        for layer in self.model.layers:
            layer.self_attn.past_key_value = cache_cls(self.config, max_batch_size, max_cache_len)

    def _reset_cache(self):
        for layer in self.model.layers:
            layer.self_attn.past_key_value = None
"""

FLAGS_ON = """\
    _supports_flash_attn_2 = True
    _supports_sdpa = True
    _supports_cache_class = True  # dynamic cache
"""
FLAGS_OFF = """\
    _supports_flash_attn_2 = False
    _supports_sdpa = False
    _supports_cache_class = False  # dynamic cache
"""

# Flags of later releases: all routing switches the codemod knows.
LATER_ON = """\
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_static_cache = True
    _supports_quantized_cache = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _supports_param_buffer_assignment = True
"""
LATER_OFF = """\
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_static_cache = False
    _supports_quantized_cache = False
    _supports_attention_backend = False
    _can_compile_fullgraph = False
    _supports_param_buffer_assignment = True
"""

UPSTREAM = BEFORE_CLASS + KEPT + FLAGS_ON + INIT_WEIGHTS + HOOKS + AFTER_CLASS
OUTPUT = BEFORE_CLASS + KEPT + FLAGS_OFF + INIT_WEIGHTS + AFTER_CLASS


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param(UPSTREAM, OUTPUT, id="flags-and-hooks"),
        pytest.param(BEFORE_CLASS + KEPT + FLAGS_ON + INIT_WEIGHTS + AFTER_CLASS, OUTPUT, id="flags-only"),
        pytest.param(
            BEFORE_CLASS + KEPT + FLAGS_OFF + INIT_WEIGHTS + HOOKS + AFTER_CLASS, OUTPUT, id="hooks-only"
        ),
        pytest.param(
            KEPT + LATER_ON + INIT_WEIGHTS, KEPT + LATER_OFF + INIT_WEIGHTS, id="later-release-flags"
        ),
    ],
)
def test_backend_flags(before: str, after: str) -> None:
    assert_codemod(PretrainedModel, before, after, ("backend-flags",))


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(OUTPUT, id="no-backends_noop"),
        pytest.param(KEPT + INIT_WEIGHTS, id="no-flags-at-all_noop"),
        pytest.param(KEPT + LATER_OFF, id="later-release-flags-off_noop"),
        pytest.param(
            KEPT + "    _supports_param_buffer_assignment = False\n", id="neutral-flag-left-alone_noop"
        ),
    ],
)
def test_noop(source: str) -> None:
    assert_noop(PretrainedModel, source, ("no-backends",))


def test_unrelated_code_untouched() -> None:
    code, _ = apply(PretrainedModel, UPSTREAM)
    for unit in (BEFORE_CLASS, KEPT, INIT_WEIGHTS, AFTER_CLASS):
        assert unit in code


def test_idempotent() -> None:
    assert_idempotent(PretrainedModel, UPSTREAM)
    assert_idempotent(PretrainedModel, KEPT + LATER_ON)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        pytest.param(
            UPSTREAM.replace("class GemmaPreTrainedModel", "class GemmaPretrainedModel"),
            "GemmaPreTrainedModel",
            id="class-renamed",
        ),
        pytest.param(AFTER_CLASS, "GemmaPreTrainedModel", id="class-removed"),
        pytest.param(
            UPSTREAM.replace("_supports_cache_class = True", "_supports_paged_attention = True"),
            "GemmaPreTrainedModel._supports_paged_attention",
            id="unknown-routing-flag",
        ),
        pytest.param(
            KEPT + "    _supports_sliding_window = False\n",
            "GemmaPreTrainedModel._supports_sliding_window",
            id="unknown-flag-even-when-false",
        ),
    ],
)
def test_drift(source: str, target: str) -> None:
    assert_drift(PretrainedModel, source, target)


def test_annotated_flag_is_not_left_true() -> None:
    try:
        code, _ = apply(PretrainedModel, KEPT + "    _supports_sdpa: bool = True\n")
    except Drift:
        return
    assert "_supports_sdpa: bool = True" not in code


def test_flags_on_one_line_are_not_left_true() -> None:
    source = KEPT + "    _supports_flash_attn_2 = True; _supports_sdpa = True\n"
    try:
        code, _ = apply(PretrainedModel, source)
    except Drift:
        return
    assert "= True; " not in code and not code.rstrip().endswith("= True")


def test_formatting_insensitive() -> None:
    reformatted = (
        BEFORE_CLASS.replace('"The bare', "'The bare").replace('head on top."', "head on top.'")
        + KEPT.replace('"model"', "'model'")
        + "    _supports_flash_attn_2 = (True)\n"
        + "    _supports_sdpa = True  # sdpa\n"
        + "    _supports_cache_class=True\n"
        + INIT_WEIGHTS.replace("(mean=0.0, std=std)", "(\n                mean=0.0, std=std\n            )")
        + HOOKS
        + AFTER_CLASS
    )
    assert_formatting_insensitive(PretrainedModel, UPSTREAM, reformatted)
