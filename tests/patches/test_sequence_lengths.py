"""sequence-lengths: GemmaForSequenceClassification takes ne(input_ids, pad).sum(-1) - 1 (§4.11)."""

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

from patches.sequence_lengths import SequenceLengths

# Not targets: must come through byte for byte.
CAUSAL_LM = """\
class GemmaForCausalLM(GemmaPreTrainedModel):
    def forward(self, input_ids):
        if self.config.pad_token_id is None:  # not the classification head: not a target
            sequence_lengths = torch.eq(input_ids, 0).int().argmax(-1) - 1
        return input_ids
"""

TOP = '''

class GemmaForSequenceClassification(GemmaPreTrainedModel):
    def forward(self, input_ids=None, inputs_embeds=None, labels=None, return_dict=None):
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
        """
        transformer_outputs = self.model(input_ids, inputs_embeds=inputs_embeds)
        hidden_states = transformer_outputs[0]
        logits = self.score(hidden_states)

        if input_ids is not None:
            batch_size = input_ids.shape[0]
        else:
            batch_size = inputs_embeds.shape[0]

        if self.config.pad_token_id is None and batch_size != 1:
            raise ValueError("Cannot handle batch sizes > 1 if no padding token is defined.")
'''
ARGMAX_MODULO = """\
        if self.config.pad_token_id is None:
            sequence_lengths = -1
        else:
            if input_ids is not None:
                # if no pad token found, use modulo instead of reverse indexing for ONNX compatibility
                sequence_lengths = torch.eq(input_ids, self.config.pad_token_id).int().argmax(-1) - 1
                sequence_lengths = sequence_lengths % input_ids.shape[-1]
                sequence_lengths = sequence_lengths.to(logits.device)
            else:
                sequence_lengths = -1
"""
# The contract's form, written out.
NE_SUM = """\
        if self.config.pad_token_id is None:
            sequence_lengths = -1
        elif input_ids is not None:
            # vacc: right padding, the last token is the one before the first pad
            sequence_lengths = torch.ne(input_ids, self.config.pad_token_id).sum(-1) - 1
            sequence_lengths = sequence_lengths.to(logits.device)
        else:
            sequence_lengths = -1
"""
BOTTOM = """
        pooled_logits = logits[torch.arange(batch_size, device=logits.device), sequence_lengths]
        return (pooled_logits,) + transformer_outputs[1:]  # keep   me
"""

UPSTREAM = CAUSAL_LM + TOP + ARGMAX_MODULO + BOTTOM
OUTPUT = CAUSAL_LM + TOP + NE_SUM + BOTTOM


@pytest.mark.parametrize(
    "before",
    [
        pytest.param(UPSTREAM, id="argmax-modulo"),
        pytest.param(
            UPSTREAM.replace(
                ARGMAX_MODULO,
                ARGMAX_MODULO.replace(
                    "        else:\n            if input_ids is not None:",
                    "        else:\n            if input_ids is not None:\n                # first pad token",
                ),
            ),
            id="argmax-modulo-with-comment",
        ),
    ],
)
def test_argmax_modulo(before: str) -> None:
    assert_codemod(SequenceLengths, before, OUTPUT, ("argmax-modulo",))


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(OUTPUT, id="ne-sum_noop"),
        pytest.param(
            OUTPUT.replace(
                "torch.ne(input_ids, self.config.pad_token_id).sum(-1) - 1",
                "torch.ne(\n                input_ids, self.config.pad_token_id\n            ).sum(-1) - 1",
            ),
            id="reformatted-own-output_noop",
        ),
    ],
)
def test_noop(source: str) -> None:
    assert_noop(SequenceLengths, source, ("ne-sum",))


def test_unrelated_code_untouched() -> None:
    code, _ = apply(SequenceLengths, UPSTREAM)
    for unit in (CAUSAL_LM, TOP, BOTTOM):
        assert unit in code


def test_idempotent() -> None:
    assert_idempotent(SequenceLengths, UPSTREAM)


# 4.49+: the last non-pad token is found by a search over token positions.
TOKEN_INDICES = """\
        if self.config.pad_token_id is None:
            last_non_pad_token = -1
        elif input_ids is not None:
            non_pad_mask = (input_ids != self.config.pad_token_id).to(logits.device, torch.int32)
            token_indices = torch.arange(input_ids.shape[-1], device=logits.device, dtype=torch.int32)
            last_non_pad_token = (token_indices * non_pad_mask).argmax(-1)
        else:
            last_non_pad_token = -1
"""


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(
            UPSTREAM.replace("class GemmaForSequenceClassification(", "class GemmaForClassification("),
            id="class-renamed",
        ),
        pytest.param(CAUSAL_LM, id="class-removed"),
        pytest.param(
            UPSTREAM.replace(
                "    def forward(self, input_ids=None, inputs_embeds",
                "    def classify(self, input_ids=None, inputs_embeds",
            ),
            id="forward-renamed",
        ),
        pytest.param(
            UPSTREAM.replace(
                "torch.eq(input_ids, self.config.pad_token_id).int().argmax(-1) - 1",
                "(input_ids != self.config.pad_token_id).sum(-1) - 2",
            ),
            id="no-argmax",
        ),
    ],
)
def test_drift(source: str) -> None:
    assert_drift(SequenceLengths, source, "GemmaForSequenceClassification.forward")


def test_formatting_insensitive() -> None:
    reformatted = UPSTREAM.replace(
        '"Cannot handle batch sizes > 1 if no padding token is defined."',
        "'Cannot handle batch sizes > 1 if no padding token is defined.'",
    ).replace(
        "sequence_lengths = sequence_lengths % input_ids.shape[-1]",
        "sequence_lengths = (sequence_lengths %\n                    input_ids.shape[-1])",
    )
    assert_formatting_insensitive(SequenceLengths, UPSTREAM, reformatted)


def test_rightmost_non_pad_keeps_upstreams_variable() -> None:
    """4.49+: `last_non_pad_token` from a search over token positions becomes the right-padding
    form, under upstream's own variable name (used by the pooling line after it)."""
    before = UPSTREAM.replace(ARGMAX_MODULO, TOKEN_INDICES).replace(
        "device=logits.device), sequence_lengths]", "device=logits.device), last_non_pad_token]"
    )
    after = CAUSAL_LM + (TOP + NE_SUM + BOTTOM).replace("sequence_lengths", "last_non_pad_token")
    assert_codemod(SequenceLengths, before, after, ("rightmost-non-pad",))


def test_formatting_insensitive_to_joined_statements() -> None:
    reformatted = UPSTREAM.replace(
        "                sequence_lengths = torch.eq(input_ids, self.config.pad_token_id).int().argmax(-1) - 1\n"  # noqa: E501
        "                sequence_lengths = sequence_lengths % input_ids.shape[-1]\n"
        "                sequence_lengths = sequence_lengths.to(logits.device)\n",
        "                sequence_lengths = torch.eq(input_ids, self.config.pad_token_id).int().argmax(-1) - 1; "  # noqa: E501
        "sequence_lengths = sequence_lengths % input_ids.shape[-1]; "
        "sequence_lengths = sequence_lengths.to(logits.device)\n",
    ).replace(
        "            else:\n                sequence_lengths = -1\n",
        "            else: sequence_lengths = -1\n",
    )
    assert reformatted.count(";") == 2 and "else: sequence_lengths" in reformatted
    assert_formatting_insensitive(SequenceLengths, UPSTREAM, reformatted)


def test_the_inputs_embeds_warning_is_dropped_by_name() -> None:
    """4.49-4.53 warn in the no-input_ids branch; the replaced block does not carry the warning
    but names it, so an upstream that stops warning changes the output (by that line alone)."""
    warning = (
        "            logger.warning_once(\n"
        '                f"{self.__class__.__name__} will not detect padding tokens in `inputs_embeds`. Results may be "\n'  # noqa: E501
        '                "unexpected if using padding tokens in conjunction with `inputs_embeds.`"\n'
        "            )\n"
    )
    quiet = UPSTREAM.replace(ARGMAX_MODULO, TOKEN_INDICES).replace(
        "device=logits.device), sequence_lengths]", "device=logits.device), last_non_pad_token]"
    )
    loud = quiet.replace(TOKEN_INDICES, TOKEN_INDICES + warning)
    with_warning, _ = apply(SequenceLengths, loud)
    without, _ = apply(SequenceLengths, quiet)
    lost = [line for line in with_warning.splitlines() if line not in without.splitlines()]
    assert lost == ["        # vacc: dropped (inputs-embeds-warning): logger.warning_once( …"]
    assert set(without.splitlines()) <= set(with_warning.splitlines())
