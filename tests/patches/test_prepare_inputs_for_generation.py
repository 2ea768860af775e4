"""prepare-inputs-for-generation: the tuple-cache prepare_inputs_for_generation and _reorder_cache (§4.9)."""

from __future__ import annotations

import re
from pathlib import Path

import libcst as cst
import pytest
from codemod_cases import (
    apply,
    assert_codemod,
    assert_drift,
    assert_formatting_insensitive,
    assert_idempotent,
    assert_noop,
    fixture,
)

from patches import _shapes as s
from patches._rules import unit_digest
from patches.prepare_inputs_for_generation import (
    KNOWN_UPSTREAM,
    PREPARE_INPUTS,
    REORDER_CACHE,
    PrepareInputsForGeneration,
)

# Not targets: must come through byte for byte.
CLASS_TOP = """\
class GemmaForCausalLM(GemmaPreTrainedModel):
    _tied_weights_keys = ["lm_head.weight"]

    def forward(self, input_ids=None, past_key_values=None, cache_position=None):
        return self.lm_head(self.model(input_ids, past_key_values, cache_position=cache_position)[0])  # keep   me
"""  # noqa: E501
OTHER_HEAD = """

class GemmaForSequenceClassification(GemmaPreTrainedModel):
    def prepare_inputs_for_generation(self, input_ids, cache_position=None):  # not a target
        return {"input_ids": input_ids, "cache_position": cache_position}
"""

CACHE_AWARE = """
    def prepare_inputs_for_generation(
        self, input_ids, past_key_values=None, attention_mask=None, inputs_embeds=None, cache_position=None, **kwargs
    ):
        past_length = 0
        if past_key_values is not None:
            if isinstance(past_key_values, Cache):
                past_length = cache_position[0] if cache_position is not None else past_key_values.get_seq_length()
            else:
                past_length = past_key_values[0][0].shape[2]
            input_ids = input_ids[:, past_length:]

        model_inputs = {"input_ids": input_ids.contiguous()}
        model_inputs.update({"cache_position": cache_position, "past_key_values": past_key_values})
        return model_inputs
"""  # noqa: E501

# The contract's form, written out.
TUPLE_CACHE = """
    def prepare_inputs_for_generation(
        self, input_ids, past_key_values=None, attention_mask=None, inputs_embeds=None, **kwargs
    ):
        # vacc: tuple cache; generate() of some releases starts with an (empty) Cache object, and
        # 5.24+ hands the cache over as `cache`
        if past_key_values is None:
            past_key_values = kwargs.get("cache")
        if past_key_values is not None and not isinstance(past_key_values, tuple):
            past_key_values = past_key_values.to_legacy_cache() if past_key_values.get_seq_length() else None
        # once the cache exists only the last token is fed
        if past_key_values:
            input_ids = input_ids[:, -1:]

        position_ids = kwargs.get("position_ids", None)
        if attention_mask is not None and position_ids is None:
            # create position_ids on the fly for batch generation
            position_ids = attention_mask.long().cumsum(-1) - 1
            position_ids.masked_fill_(attention_mask == 0, 1)
        if past_key_values and position_ids is not None:
            # (also when generate() hands over positions for the whole sequence, as 5.4+ does)
            position_ids = position_ids[:, -1].unsqueeze(-1)

        # if `inputs_embeds` are passed, we only want to use them in the 1st generation step
        if inputs_embeds is not None and not past_key_values:
            model_inputs = {"inputs_embeds": inputs_embeds}
        else:
            model_inputs = {"input_ids": input_ids}

        model_inputs.update(
            {
                "position_ids": position_ids,
                "past_key_values": past_key_values,
                "use_cache": kwargs.get("use_cache"),
                "attention_mask": attention_mask,
            }
        )
        return model_inputs
"""

REORDER = """
    @staticmethod
    def _reorder_cache(past_key_values, beam_idx):
        reordered_past = ()
        for layer_past in past_key_values:
            reordered_past += (
                tuple(past_state.index_select(0, beam_idx.to(past_state.device)) for past_state in layer_past),
            )
        return reordered_past
"""  # noqa: E501
CACHE_REORDER = """
    def _reorder_cache(self, past_key_values, beam_idx):
        past_key_values.reorder_cache(beam_idx)
        return past_key_values
"""

UPSTREAM = CLASS_TOP + CACHE_AWARE + REORDER + OTHER_HEAD
OUTPUT = CLASS_TOP + TUPLE_CACHE + REORDER + OTHER_HEAD
PREPARE = "GemmaForCausalLM.prepare_inputs_for_generation"
REORDER_TARGET = "GemmaForCausalLM._reorder_cache"


def member(source: str, name: str = "prepare_inputs_for_generation") -> cst.CSTNode:
    """The method ``name`` of GemmaForCausalLM in ``source``, as the codemod sees it."""
    hit = s.find_class(cst.parse_module(fixture(source)), "GemmaForCausalLM")
    assert hit is not None
    body = s.class_body(hit[1])
    index = s.find(body, name)
    assert index is not None
    return body[index]


def digest(source: str) -> str:
    return unit_digest(member(source))


@pytest.fixture
def known(monkeypatch: pytest.MonkeyPatch) -> str:
    """CACHE_AWARE registered as a known upstream form (the real digests are of real releases)."""
    key = digest(CLASS_TOP + CACHE_AWARE)
    monkeypatch.setitem(KNOWN_UPSTREAM, key, "test")
    return key


def test_synthetic_form_is_not_known_by_itself() -> None:
    """Without registering it, the synthetic upstream form is drift: recognition is by digest only."""
    assert digest(CLASS_TOP + CACHE_AWARE) not in KNOWN_UPSTREAM
    drift = assert_drift(PrepareInputsForGeneration, UPSTREAM, PREPARE)
    assert digest(CLASS_TOP + CACHE_AWARE)[:12] in drift.found


@pytest.mark.parametrize(
    ("before", "shapes"),
    [
        pytest.param(UPSTREAM, ("cache-class-aware", "tuple-reorder-cache"), id="cache-class-aware"),
        pytest.param(CLASS_TOP + CACHE_AWARE + OTHER_HEAD, ("cache-class-aware",), id="no-reorder-cache"),
        pytest.param(
            CLASS_TOP + TUPLE_CACHE + OTHER_HEAD, ("tuple-cache",), id="tuple-cache-without-reorder"
        ),
        pytest.param(CLASS_TOP + OTHER_HEAD, ("inherited",), id="inherited-from-generation-mixin"),
        pytest.param(
            CLASS_TOP + REORDER + OTHER_HEAD, ("inherited", "tuple-reorder-cache"), id="inherited-reorder"
        ),
    ],
)
def test_rewrites(known: str, before: str, shapes: tuple[str, ...]) -> None:
    assert_codemod(PrepareInputsForGeneration, before, OUTPUT, shapes)


def test_leading_comment_of_the_replaced_method_is_kept(known: str) -> None:
    comment = "\n    # upstream's comment above the method\n"
    before = UPSTREAM.replace(
        "\n    def prepare_inputs_for_generation(", comment + "    def prepare_inputs_for_generation("
    )
    after = OUTPUT.replace(
        "\n    def prepare_inputs_for_generation(", comment + "    def prepare_inputs_for_generation("
    )
    assert before != UPSTREAM and after != OUTPUT
    assert_codemod(PrepareInputsForGeneration, before, after, ("cache-class-aware", "tuple-reorder-cache"))


# -- the digest: code as Python, so formatting, comments and the docstring do not change it ---------
FORMATTING_VARIANTS = [
    pytest.param(
        CACHE_AWARE.replace(
            "            input_ids = input_ids[:, past_length:]\n",
            "            # keep the unprocessed tokens\n            input_ids = input_ids[\n"
            "                :, past_length:\n            ]\n",
        ),
        id="comment-and-line-breaks",
    ),
    pytest.param(
        CACHE_AWARE.replace('{"input_ids": input_ids.contiguous()}', "{'input_ids': input_ids.contiguous()}"),
        id="quotes",
    ),
    pytest.param(
        CACHE_AWARE.replace(
            "    ):\n",
            '    ):\n        """Prepare the inputs of one generation step."""\n',
        ),
        id="docstring-added",
    ),
    pytest.param(
        CACHE_AWARE.replace(
            "    ):\n",
            '    ):\n        """Another docstring,\n\n        on several lines."""\n',
        ),
        id="other-docstring",
    ),
    pytest.param(
        CACHE_AWARE.replace(
            "        self, input_ids, past_key_values=None, attention_mask=None, inputs_embeds=None, cache_position=None, **kwargs\n",  # noqa: E501
            "        self,\n        input_ids,\n        past_key_values=None,  # the cache\n"
            "        attention_mask=None,\n        inputs_embeds=None,\n        cache_position=None,\n"
            "        **kwargs,\n",
        ),
        id="signature-one-per-line",
    ),
    pytest.param(
        CACHE_AWARE.replace("        past_length = 0\n", "        past_length = 0;  \n\n\n"),
        id="semicolon-and-blank-lines",
    ),
]


@pytest.mark.parametrize("variant", FORMATTING_VARIANTS)
def test_formatting_comments_and_docstring_keep_the_digest(known: str, variant: str) -> None:
    assert variant != CACHE_AWARE
    assert digest(CLASS_TOP + variant) == known
    assert_codemod(
        PrepareInputsForGeneration,
        CLASS_TOP + variant + REORDER + OTHER_HEAD,
        OUTPUT,
        ("cache-class-aware", "tuple-reorder-cache"),
    )


# -- the same form with one thing changed is another form: drift, never silently replaced ----------
CHANGED_FORMS = [
    pytest.param(CACHE_AWARE.replace("past_length = 0\n", "past_length = 1\n"), id="constant-changed"),
    pytest.param(
        CACHE_AWARE.replace("input_ids[:, past_length:]", "input_ids[:, past_length - 1 :]"),
        id="slice-changed",
    ),
    pytest.param(
        CACHE_AWARE.replace('{"input_ids": input_ids.contiguous()}', '{"input_ids": input_ids}'),
        id="call-removed",
    ),
    pytest.param(
        CACHE_AWARE.replace("            input_ids = input_ids[:, past_length:]\n", ""),
        id="statement-deleted",
    ),
    pytest.param(
        CACHE_AWARE.replace(
            "        return model_inputs\n",
            '        model_inputs["token_type_ids"] = kwargs.get("token_type_ids")\n'
            "        return model_inputs\n",
        ),
        id="statement-added",
    ),
    pytest.param(
        CACHE_AWARE.replace(
            "inputs_embeds=None, cache_position=None", "inputs_embeds=None, cache_position=0"
        ),
        id="default-changed",
    ),
    pytest.param(
        CACHE_AWARE.replace(
            "    def prepare_inputs_for_generation(",
            "    @torch.no_grad()\n    def prepare_inputs_for_generation(",
        ),
        id="decorator-added",
    ),
]


@pytest.mark.parametrize("changed", CHANGED_FORMS)
def test_known_form_with_one_change_is_drift(known: str, changed: str) -> None:
    assert changed != CACHE_AWARE
    assert digest(CLASS_TOP + changed) != known
    drift = assert_drift(PrepareInputsForGeneration, CLASS_TOP + changed + REORDER + OTHER_HEAD, PREPARE)
    assert "KNOWN_UPSTREAM" in drift.found


# -- _reorder_cache: the static tuple form is kept as it is; any other form is drift -------------------
REFORMATTED_REORDER = REORDER.replace(
    "        reordered_past = ()\n", "        reordered_past = (  )  # empty\n"
)


@pytest.mark.parametrize(
    "before",
    [
        pytest.param(UPSTREAM, id="upstream"),
        pytest.param(CLASS_TOP + REORDER + OTHER_HEAD, id="inherited-prepare"),
    ],
)
def test_tuple_reorder_cache_is_kept(known: str, before: str) -> None:
    code, change = apply(PrepareInputsForGeneration, before)
    assert REORDER in code
    assert "tuple-reorder-cache" in change.shapes


def test_reformatted_tuple_reorder_cache_is_kept_byte_for_byte(known: str) -> None:
    before = CLASS_TOP + CACHE_AWARE + REFORMATTED_REORDER + OTHER_HEAD
    after = CLASS_TOP + TUPLE_CACHE + REFORMATTED_REORDER + OTHER_HEAD
    assert_codemod(PrepareInputsForGeneration, before, after, ("cache-class-aware", "tuple-reorder-cache"))


@pytest.mark.parametrize(
    "prepare",
    [
        pytest.param(CACHE_AWARE, id="known-prepare"),
        pytest.param(TUPLE_CACHE, id="tuple-cache-prepare"),
        pytest.param("", id="inherited-prepare"),
    ],
)
@pytest.mark.parametrize(
    "reorder",
    [
        pytest.param(CACHE_REORDER, id="cache-object"),
        pytest.param(REORDER.replace("index_select(0,", "index_select(1,"), id="tuple-form-other-dim"),
        pytest.param(
            REORDER.replace(
                "    @staticmethod\n    def _reorder_cache(past_key_values",
                "    def _reorder_cache(self, past_key_values",
            ),
            id="tuple-form-not-static",
        ),
        pytest.param(
            REORDER.replace("        return reordered_past\n", "        return reordered_past[::-1]\n"),
            id="tuple-form-other-return",
        ),
    ],
)
def test_other_reorder_cache_is_drift(known: str, prepare: str, reorder: str) -> None:
    drift = assert_drift(
        PrepareInputsForGeneration, CLASS_TOP + prepare + reorder + OTHER_HEAD, REORDER_TARGET
    )
    assert "static tuple form" in drift.found


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(OUTPUT, id="tuple-cache_noop"),
        pytest.param(
            OUTPUT.replace('kwargs.get("use_cache")', "kwargs.get('use_cache')").replace(
                "            # create position_ids on the fly for batch generation\n", ""
            ),
            id="reformatted-own-output_noop",
        ),
        pytest.param(
            CLASS_TOP + TUPLE_CACHE + REFORMATTED_REORDER + OTHER_HEAD, id="reformatted-reorder_noop"
        ),
    ],
)
def test_noop(source: str) -> None:
    assert_noop(PrepareInputsForGeneration, source, ("tuple-cache", "tuple-reorder-cache"))


def test_unrelated_code_untouched(known: str) -> None:
    code, _ = apply(PrepareInputsForGeneration, UPSTREAM)
    for unit in (CLASS_TOP, OTHER_HEAD):
        assert unit in code


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(UPSTREAM, id="known"),
        pytest.param(CLASS_TOP + CACHE_AWARE, id="known-without-reorder"),
        pytest.param(CLASS_TOP, id="inherited"),
    ],
)
def test_idempotent(known: str, source: str) -> None:
    assert_idempotent(PrepareInputsForGeneration, source)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        pytest.param(
            UPSTREAM.replace("class GemmaForCausalLM(", "class GemmaLM("), PREPARE, id="class-renamed"
        ),
        pytest.param(OTHER_HEAD, PREPARE, id="class-removed"),
        pytest.param(
            CLASS_TOP.replace("    def forward(", "    def call(") + REORDER,
            PREPARE,
            id="neither-prepare-nor-forward",
        ),
        pytest.param(
            CLASS_TOP + "\n    def prepare_inputs_for_generation(self, input_ids, **kwargs):\n"
            '        return {"input_ids": input_ids}\n',
            PREPARE,
            id="prepare-unknown-form",
        ),
        pytest.param(
            OUTPUT.replace('kwargs.get("use_cache")', 'kwargs.get("use_cache", True)'),
            PREPARE,
            id="own-output-edited",
        ),
    ],
)
def test_drift(known: str, source: str, target: str) -> None:
    assert_drift(PrepareInputsForGeneration, source, target)


def test_formatting_insensitive(known: str) -> None:
    reformatted = (
        CLASS_TOP.replace('["lm_head.weight"]', "['lm_head.weight']")
        + CACHE_AWARE.replace(
            "            input_ids = input_ids[:, past_length:]\n",
            "            # keep the unprocessed tokens\n            input_ids = input_ids[\n"
            "                :, past_length:\n            ]\n",
        )
        + REFORMATTED_REORDER
        + OTHER_HEAD
    )
    assert_formatting_insensitive(PrepareInputsForGeneration, UPSTREAM, reformatted)


# -- a real upstream form -------------------------------------------------------------------------------
def _real_modeling(monkeypatch: pytest.MonkeyPatch, version: str) -> str:
    """modeling_gemma.py of a pinned release, through tests/releases.py (the user cache)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    from releases import fetch

    return fetch(version).modeling


@pytest.mark.network
def test_real_upstream_form_is_recognised_and_a_mutant_drifts(monkeypatch: pytest.MonkeyPatch) -> None:
    modeling = _real_modeling(monkeypatch, "4.40.2")
    method = s.render(member(modeling))
    assert "cache_position" in method and "past_length = 0\n" in method
    assert KNOWN_UPSTREAM.get(digest(modeling)) == "4.39.2-4.40.2"

    code, change = apply(PrepareInputsForGeneration, modeling)
    assert change.shapes == ("cache-class-aware", "tuple-reorder-cache")
    assert s.same_code(member(code), PREPARE_INPUTS)
    assert s.same_code(member(code, "_reorder_cache"), REORDER_CACHE)

    # its comments removed and a docstring added: the same code, still recognised
    start = modeling.index("    def prepare_inputs_for_generation(")
    end = modeling.index("    @staticmethod\n    def _reorder_cache(", start)
    region = re.sub(r"(?m)^ *#.*\n", "", modeling[start:end])
    region = region.replace("    ):\n", '    ):\n        """Reformatted."""\n', 1)
    assert region.count("#") < modeling[start:end].count("#")
    reformatted = modeling[:start] + region + modeling[end:]
    assert KNOWN_UPSTREAM.get(digest(reformatted)) == "4.39.2-4.40.2"
    assert apply(PrepareInputsForGeneration, reformatted)[1].shapes == change.shapes

    # one constant of upstream's method changed: another form, so drift
    assert modeling.count("past_length = 0\n") == 1
    mutant = modeling.replace("past_length = 0\n", "past_length = 1\n")
    assert digest(mutant) not in KNOWN_UPSTREAM
    drift = assert_drift(PrepareInputsForGeneration, mutant, PREPARE)
    assert digest(mutant)[:12] in drift.found
