"""mask-generation — 修改attention mask的生成方式: tuple cache and explicit masks in GemmaModel.

Why: the vacc graphs take the KV cache as one ``(key, value)`` tuple per layer and the
mask as an explicit additive tensor; upstream's ``GemmaModel.forward`` converts caches to
``Cache`` objects, tracks ``cache_position`` and builds masks through backend-dependent
helpers (``_update_causal_mask``), none of which the compiler can take.

Contract (SPEC §4.7): ``GemmaModel.forward(input_ids=None, attention_mask=None,
position_ids=None, past_key_values=None, inputs_embeds=None, use_cache=None,
output_attentions=None, output_hidden_states=None, return_dict=None)``; past length
``past_key_values[0][0].shape[2]``; default ``position_ids`` continue from it; default mask
all ones over past + current; the 4D mask from ``_prepare_decoder_attention_mask``; the next
cache returned as the same kind of tuple.  Upstream's decorators, docstring, embedding
normalisation statements (``normalizer`` and its dtype) and output construction are carried
over as they are, so the rewritten forward computes what upstream computes.  The heads'
``forward`` lose ``cache_position`` (SPEC §4, heads).

Shapes recognised:

* ``dynamic-cache`` — ``GemmaModel.forward(..., cache_position)`` converting to
  ``DynamicCache`` and calling ``self._update_causal_mask``, layers called through
  ``self._gradient_checkpointing_func(decoder_layer.__call__, ...)`` when checkpointing:
  rewritten, ``_update_causal_mask`` removed;
* ``position-embeddings`` — as ``dynamic-cache``, also computing the rotary tables for its
  layers with ``self.rotary_emb`` (4.48–4.52; dropped: the attention computes its own);
* ``create-causal-mask`` — the mask built with ``create_causal_mask`` (4.53+); the forward
  may have no ``return_dict`` and be decorated with ``@can_return_tuple``,
  ``@check_model_inputs``, ``@capture_outputs``, ``@merge_with_config_defaults`` or
  ``@deprecate_kwarg`` — dropped, the rewritten forward handles its inputs and outputs itself
  (documentation decorators are kept); the cache argument may be named ``cache`` (5.24+);
* ``scaled-embedding`` — no normaliser in the forward because ``embed_tokens`` is a scaled
  embedding class (5.x): nothing to carry over;
* ``tuple-cache`` — forward already calling ``self._prepare_decoder_attention_mask`` with no
  ``cache_position`` (this codemod's output);
* ``head-cache-position`` — a head's forward taking ``cache_position`` and passing it to
  ``self.model``: both removed;
* ``head-logits-to-keep`` — a head's forward taking ``num_logits_to_keep``/``logits_to_keep``
  to slice positions before ``lm_head`` (4.45+): the parameter goes and logits are computed
  for every position (upstream's default, 0, does the same);
* ``head-cache-keyword`` — a head's forward taking the cache as ``cache`` (5.24+, behind
  ``@deprecate_kwarg``): the parameter becomes ``past_key_values`` and the renaming decorator goes;
* ``head-tuple-cache`` — a head's forward with none of these: unchanged;
* ``generic-head`` — ``GemmaForSequenceClassification``/``GemmaForTokenClassification`` whose
  body is inherited from ``Generic…ForSequenceClassification``/``…ForTokenClassification``
  (4.54+), which build their model with ``AutoModel.from_config`` — upstream's GemmaModel, not
  the vacc one: both get an ``__init__`` building ``GemmaModel``; both also get a tuple-cache
  ``forward`` of their own (the sequence classifier with the generic last-token search, which
  ``sequence-lengths`` then rewrites; the token classifier because the generic forward passes the
  cache under the release's keyword, ``cache`` in 5.24+, which the vacc GemmaModel does not take),
  and the sequence classifier loses the generic base.

Layers derived from ``GradientCheckpointingLayer`` (4.52+) checkpoint themselves, so the
rewritten loop then calls them directly instead of through ``_gradient_checkpointing_func``.
The output is upstream's output class with the tuple cache in whichever field it has
(``past_key_values`` or ``cache``), plus the collected hidden states and attentions.

The layer loop iterates what upstream's iterates (``self.layers`` or
``self.layers[: self.config.num_hidden_layers]``).
"""

from __future__ import annotations

import libcst as cst
import libcst.matchers as m

from patches import _rules as r
from patches import _shapes as s
from patches._base import VaccCodemod
from patches._model_forward import ModelForward

HEADS = ("GemmaForCausalLM", "GemmaForSequenceClassification")
#: Heads some releases have (4.45+), passing the tuple cache through like the others.
OPTIONAL_HEADS = ("GemmaForTokenClassification",)
#: Heads that may inherit everything from a generic class of the library (4.54+), and that class.
GENERIC_HEADS = {
    "GemmaForSequenceClassification": "GenericForSequenceClassification",
    "GemmaForTokenClassification": "GenericForTokenClassification",
}
GENERIC_SEQUENCE_CLASSIFIER = """
def __init__(self, config):
    # vacc: built here, not by the generic head's AutoModel.from_config (upstream's GemmaModel)
    super().__init__(config)
    self.num_labels = config.num_labels
    self.model = GemmaModel(config)
    self.score = nn.Linear(config.hidden_size, self.num_labels, bias=False)

    # Initialize weights and apply final processing
    self.post_init()

def get_input_embeddings(self):
    return self.model.embed_tokens

def set_input_embeddings(self, value):
    self.model.embed_tokens = value

def forward(
    self,
    input_ids=None,
    attention_mask=None,
    position_ids=None,
    past_key_values=None,
    inputs_embeds=None,
    labels=None,
    use_cache=None,
    output_attentions=None,
    output_hidden_states=None,
    return_dict=None,
):
    from transformers.modeling_outputs import SequenceClassifierOutputWithPast

    return_dict = return_dict if return_dict is not None else self.config.return_dict
    transformer_outputs = self.model(
        input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        past_key_values=past_key_values,
        inputs_embeds=inputs_embeds,
        use_cache=use_cache,
        output_attentions=output_attentions,
        output_hidden_states=output_hidden_states,
        return_dict=return_dict,
    )
    hidden_states = transformer_outputs[0]
    logits = self.score(hidden_states)

    if input_ids is not None:
        batch_size = input_ids.shape[0]
    else:
        batch_size = inputs_embeds.shape[0]

    if self.config.pad_token_id is None and batch_size != 1:
        raise ValueError("Cannot handle batch sizes > 1 if no padding token is defined.")
    if self.config.pad_token_id is None:
        last_non_pad_token = -1
    elif input_ids is not None:
        non_pad_mask = (input_ids != self.config.pad_token_id).to(logits.device, torch.int32)
        token_indices = torch.arange(input_ids.shape[-1], device=logits.device, dtype=torch.int32)
        last_non_pad_token = (token_indices * non_pad_mask).argmax(-1)
    else:
        last_non_pad_token = -1

    pooled_logits = logits[torch.arange(batch_size, device=logits.device), last_non_pad_token]

    loss = None
    if labels is not None:
        loss = self.loss_function(logits=logits, labels=labels, pooled_logits=pooled_logits, config=self.config)

    if not return_dict:
        output = (pooled_logits,) + transformer_outputs[1:]
        return ((loss,) + output) if loss is not None else output

    return SequenceClassifierOutputWithPast(
        loss=loss,
        logits=pooled_logits,
        __cache_field__=transformer_outputs.__cache_field__,
        hidden_states=transformer_outputs.hidden_states,
        attentions=transformer_outputs.attentions,
    )
"""
GENERIC_TOKEN_CLASSIFIER = """
def __init__(self, config):
    # vacc: built here, not by the generic head's AutoModel.from_config (upstream's GemmaModel)
    GemmaPreTrainedModel.__init__(self, config)
    self.num_labels = config.num_labels
    self.model = GemmaModel(config)
    if getattr(config, "classifier_dropout", None) is not None:
        classifier_dropout = config.classifier_dropout
    elif getattr(config, "hidden_dropout", None) is not None:
        classifier_dropout = config.hidden_dropout
    else:
        classifier_dropout = 0.1
    self.dropout = nn.Dropout(classifier_dropout)
    self.score = nn.Linear(config.hidden_size, config.num_labels)

    # Initialize weights and apply final processing
    self.post_init()

def forward(
    self,
    input_ids=None,
    attention_mask=None,
    position_ids=None,
    past_key_values=None,
    inputs_embeds=None,
    labels=None,
    use_cache=None,
    output_attentions=None,
    output_hidden_states=None,
    return_dict=None,
):
    # vacc: the generic head's forward passes the cache as the release's keyword (`cache` in 5.24+);
    # the vacc GemmaModel takes the tuple cache as past_key_values
    from transformers.modeling_outputs import TokenClassifierOutput

    return_dict = return_dict if return_dict is not None else self.config.return_dict
    outputs = self.model(
        input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        past_key_values=past_key_values,
        inputs_embeds=inputs_embeds,
        use_cache=use_cache,
        output_attentions=output_attentions,
        output_hidden_states=output_hidden_states,
        return_dict=return_dict,
    )
    sequence_output = outputs[0]
    sequence_output = self.dropout(sequence_output)
    logits = self.score(sequence_output)

    loss = None
    if labels is not None:
        loss = self.loss_function(logits, labels, self.config)

    if not return_dict:
        output = (logits,) + outputs[2:]
        return ((loss,) + output) if loss is not None else output

    return TokenClassifierOutput(
        loss=loss,
        logits=logits,
        hidden_states=outputs.hidden_states,
        attentions=outputs.attentions,
    )
"""
#: The parameters of a head's forward in the contract (SPEC §4, heads), besides ``self``.
HEAD_PARAMS = {
    "input_ids", "attention_mask", "position_ids", "past_key_values", "inputs_embeds", "labels",
    "use_cache", "output_attentions", "output_hidden_states", "return_dict",
}  # fmt: skip
#: Head parameters this codemod removes, and the names through which logits slicing is done.
REMOVED_HEAD_PARAMS = ("cache_position", "num_logits_to_keep", "logits_to_keep")
LOGITS_SLICING = {"num_logits_to_keep", "logits_to_keep", "slice_indices"}
_LAYER_LOOP = m.For(target=m.Name("decoder_layer"))

_SCALE = s.assigns(
    m.Name("hidden_states"), m.BinaryOperation(left=m.Name("hidden_states"), operator=m.Multiply())
)
_NORMALIZER = s.assigns(m.Name("normalizer"))
#: The layer call when the layers checkpoint themselves (GradientCheckpointingLayer, 4.52+).
_SELF_CHECKPOINTING_CALL = s.parse_stmts(
    """
    layer_outputs = decoder_layer(
        hidden_states,
        attention_mask=attention_mask,
        position_ids=position_ids,
        past_key_value=past_key_value,
        output_attentions=output_attentions,
        use_cache=use_cache,
    )
    """
)[0]
_CHECKPOINTING_BRANCH = m.If(test=m.BooleanOperation(left=m.Attribute(attr=m.Name("gradient_checkpointing"))))
#: Decorators of upstream's forward that intercept its inputs or outputs (the rewritten forward
#: handles them itself), and decorators that only document it.
INTERCEPTING_DECORATORS = {
    "can_return_tuple", "check_model_inputs", "capture_outputs", "merge_with_config_defaults", "deprecate_kwarg",
}  # fmt: skip
DOC_DECORATORS = {
    "add_start_docstrings_to_model_forward", "replace_return_docstrings", "add_code_sample_docstrings",
    "auto_docstring",
}  # fmt: skip
CACHE_FIELDS = ("past_key_values", "cache")
_OUTPUT = m.SimpleStatementLine(body=[m.Return(value=m.Call(func=m.Name()))])
_MODEL_CALL = m.Call(func=s.self_attr("model"))


def _decorator_name(decorator: cst.Decorator) -> str:
    node = decorator.decorator
    return s.dotted(node.func if isinstance(node, cst.Call) else node) or ""


class MaskGeneration(VaccCodemod):
    """Tuple cache and ``_prepare_decoder_attention_mask`` in ``GemmaModel.forward``; heads without
    ``cache_position``."""

    NAME = "mask-generation"
    DESCRIPTION = (
        "GemmaModel.forward with a tuple cache and explicit additive masks; heads without cache_position."
    )
    TARGETS = (
        "GemmaModel.forward",
        "GemmaModel._update_causal_mask",
        *(f"{head}.forward" for head in (*HEADS, *OPTIONAL_HEADS)),
        *(f"{head}.{member}" for head in GENERIC_HEADS for member in ("<bases>", "__init__")),
        "GemmaForSequenceClassification.get_input_embeddings",
        "GemmaForSequenceClassification.set_input_embeddings",
    )
    DROPS = {
        "GemmaModel._update_causal_mask": "mask-builder: the vacc mask comes from _prepare_decoder_attention_mask"
    }
    SHAPES = {
        "dynamic-cache": "GemmaModel.forward(..., cache_position) with DynamicCache and _update_causal_mask",
        "position-embeddings": "as dynamic-cache, with rotary tables computed by GemmaModel for its layers",
        "create-causal-mask": "GemmaModel.forward building its mask with create_causal_mask (4.53+)",
        "scaled-embedding": "no normaliser in forward: embed_tokens is a scaled embedding (5.x)",
        "tuple-cache": "GemmaModel.forward calling _prepare_decoder_attention_mask (this codemod's output)",
        "head-cache-position": "a head's forward taking cache_position and passing it to self.model",
        "head-logits-to-keep": "a head's forward taking (num_)logits_to_keep to slice positions before lm_head",
        "head-cache-keyword": "a head's forward taking the cache as `cache` (5.24+): renamed past_key_values",
        "head-tuple-cache": "a head's forward without cache_position or logits_to_keep",
        "generic-head": "a head inheriting __init__/forward from a Generic…ForXxx class (4.54+)",
    }

    def rewrite(self, module: cst.Module) -> cst.Module:
        body = list(module.body)
        i = s.find(body, "GemmaModel")
        if i is None or not isinstance(body[i], cst.ClassDef):
            raise self.drift("GemmaModel.forward", "no module-level class GemmaModel")
        body[i] = self._model(body[i], module)
        for head in (*HEADS, *OPTIONAL_HEADS):
            j = s.find(body, head)
            if j is None or not isinstance(body[j], cst.ClassDef):
                if head in OPTIONAL_HEADS:
                    continue
                raise self.drift(f"{head}.forward", f"no module-level class {head}")
            body[j] = self._head(head, body[j], module)
        return module.with_changes(body=body)

    def _model(self, cls: cst.ClassDef, module: cst.Module) -> cst.ClassDef:
        hit = s.find_method(cls, "forward")
        if hit is None:
            raise self.drift("GemmaModel.forward", "GemmaModel has no forward", anchor="GemmaModel")
        k, forward = hit
        params = s.param_names(forward)
        called = set(s.calls(forward))
        if "self._prepare_decoder_attention_mask" in called and not {"cache_position", "cache"} & set(params):
            self.met("tuple-cache")
            self._cache_field = _cache_field(forward)
            return cls
        if "self._update_causal_mask" in called:
            self.met("position-embeddings" if "self.rotary_emb" in called else "dynamic-cache")
        elif "create_causal_mask" in called:
            self.met("create-causal-mask")
        else:
            raise self.drift(
                "GemmaModel.forward",
                "forward builds its mask neither with self._update_causal_mask or create_causal_mask "
                "nor with self._prepare_decoder_attention_mask",
                nearest=f"forward({', '.join(params)})",
            )
        if "self._gradient_checkpointing_func" not in called and not _layers_checkpoint_themselves(module):
            raise self.drift(
                "GemmaModel.forward",
                "no `self._gradient_checkpointing_func(decoder_layer.__call__, ...)` call and GemmaDecoderLayer is "
                "not a GradientCheckpointingLayer: unknown gradient checkpointing form",
            )
        if not any(r.known("hidden_states = hidden_states * normalizer")(x) for x in s.fn_body(forward)):
            if not _embedding_is_scaled(cls):
                if not _scales_embedding(forward):
                    raise self.drift(
                        "GemmaModel.forward",
                        "no embedding normalisation `hidden_states = hidden_states * <normalizer>` in forward, "
                        "and embed_tokens is no scaled embedding",
                    )
            else:
                self.met("scaled-embedding")
        translation = ModelForward(self, forward, module, _layers_checkpoint_themselves(module))
        body = s.class_body(cls)
        body[k] = translation.translate()
        self._cache_field = translation.cache_field
        update = s.find(body, "_update_causal_mask")
        if update is not None:
            del body[update]
        return s.with_class_body(cls, body)

    def _head(self, head: str, cls: cst.ClassDef, module: cst.Module) -> cst.ClassDef:
        hit = s.find_method(cls, "forward")
        if hit is None:
            if head in GENERIC_HEADS and any(s.dotted(b.value) == GENERIC_HEADS[head] for b in cls.bases):
                self.met("generic-head")
                return self._generic_head(head, cls, module)
            raise self.drift(f"{head}.forward", f"{head} has no forward", anchor=head)
        k, forward = hit
        params = s.param_names(forward)
        known = HEAD_PARAMS | set(REMOVED_HEAD_PARAMS) | {"cache"}
        unknown = [p for p in params[1:] if p not in known and not p.startswith("**")]
        if unknown:
            raise self.drift(
                f"{head}.forward",
                f"forward takes {', '.join(unknown)}: not a parameter of the "
                "tuple-cache head and not one this codemod knows how to remove",
                nearest=f"forward({', '.join(params)})",
            )
        renaming = [d for d in forward.decorators if _decorator_name(d) == "deprecate_kwarg"]
        removed = [p for p in params if p in REMOVED_HEAD_PARAMS]
        if not removed and not renaming and "cache" not in params:
            self.met("head-tuple-cache")
            return cls
        if "self.model" not in s.calls(forward):
            raise self.drift(f"{head}.forward", f"forward takes {removed[0]} but never calls self.model")
        if "cache_position" in removed:
            self.met("head-cache-position")
        if {"num_logits_to_keep", "logits_to_keep"} & set(removed):
            self.met("head-logits-to-keep")
        new = forward.with_changes(
            params=forward.params.with_changes(
                params=s.drop_items(forward.params.params, lambda p: p.name.value in REMOVED_HEAD_PARAMS)
            ),
            decorators=[d for d in forward.decorators if d not in renaming],
        )
        if "cache" in params:  # 5.24+: the contract's head takes past_key_values
            self.met("head-cache-keyword")
            new = s.rename(new, {"cache": cst.Name("past_key_values")})
        unit = f"{head}.forward"
        rules = [
            r.Rule("logits-to-keep", r.DROP, "the tuple-cache head computes logits for every position",
                   _SLICES_LOGITS),
            r.Rule("all-logits", r.TRANSLATE, "lm_head sees every position", _slices_hidden_states,
                   lambda x: [x.visit(_AllLogits())]),
            r.Rule("model-call", r.TRANSLATE, "the model called with the tuple cache, no cache_position",
                   lambda x: _assigned_call(x, "self.model") is not None,
                   lambda x: [_retarget_model_call(self, unit, x)]),
        ]  # fmt: skip
        account = r.Accountant(self, unit, rules, frozenset(REMOVED_HEAD_PARAMS) | LOGITS_SLICING)
        new = s.with_fn_body(new, account.block(s.fn_body(new)))
        r.check_upstream_names(self, unit, forward, module)
        left = r.unresolved(new, r.module_names(module))
        if left:
            raise self.drift(
                unit, f"the rewritten forward uses {', '.join(left)}, which nothing defines", anchor=head
            )
        return s.with_class_body(cls, s.replace_in(s.class_body(cls), k, new))

    def _generic_head(self, head: str, cls: cst.ClassDef, module: cst.Module) -> cst.ClassDef:
        """A head inheriting everything from a ``Generic…`` class (4.54+): that class builds its
        model with ``AutoModel.from_config``, which knows only upstream's GemmaModel.  The vacc
        head builds the vacc GemmaModel; the sequence classifier also gets its forward here (with
        upstream's last-token search, which ``sequence-lengths`` then rewrites)."""
        template = (
            GENERIC_SEQUENCE_CLASSIFIER
            if head == "GemmaForSequenceClassification"
            else GENERIC_TOKEN_CLASSIFIER
        )
        members = s.parse_stmts(template.replace("__cache_field__", self._cache_field))
        doc = s.docstring_stmt(s.class_body(cls))
        body = [*([doc] if doc else []), *members]
        if head == "GemmaForSequenceClassification":  # a head of its own; the token classifier keeps
            bases = [b for b in cls.bases if s.dotted(b.value) != GENERIC_HEADS[head]]  # the generic forward
            cls = cls.with_changes(
                bases=[*bases[:-1], bases[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)]
            )
        return s.with_class_body(cls, body)


def _cache_field(forward: cst.FunctionDef) -> str:
    """The field of the model's output class that carries the cache (``past_key_values``, or
    ``cache`` from 5.24 on), in an already rewritten forward."""
    keywords = {a.keyword.value for a in m.findall(forward, m.Arg(keyword=m.Name())) if a.keyword}
    return next((f for f in CACHE_FIELDS if f in keywords and f != "past_key_values"), "past_key_values")


def _scales_embedding(forward: cst.FunctionDef) -> bool:
    """``hidden_states = hidden_states * <factor>`` in the forward (4.38: a bare float factor)."""
    return any(m.matches(x, _SCALE) for x in s.fn_body(forward))


def _assigned_call(stmt: cst.CSTNode, func: str) -> cst.Call | None:
    """The call of ``x = func(...)`` / ``x: T = func(...)`` on a line of its own."""
    if not isinstance(stmt, cst.SimpleStatementLine) or len(stmt.body) != 1:
        return None
    hit = s.assignment(stmt.body[0])
    value = hit[1] if hit else None
    return value if isinstance(value, cst.Call) and s.dotted(value.func) == func else None


def _retarget_model_call(
    codemod: VaccCodemod, unit: str, stmt: cst.SimpleStatementLine
) -> cst.SimpleStatementLine:
    """The head's ``self.model(...)`` call without ``cache_position``, passing the cache as
    ``past_key_values`` (the 5.24 keyword ``cache=`` included)."""
    call = _assigned_call(stmt, "self.model")
    new = r.retarget_args(
        codemod, unit, call, dropped=("cache_position",),
        renamed={"past_key_values": "past_key_values", "cache": "past_key_values"}, node=stmt,
    )  # fmt: skip
    small = stmt.body[0]
    return stmt.with_changes(body=[small.with_changes(value=new)])


_SLICES_LOGITS = r.known(
    "slice_indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep",
    "hidden_states = slice_logits_to_keep(hidden_states, logits_to_keep)",
)
#: The subscripts that narrow the positions lm_head sees.
_NARROWED = r.known(
    "hidden_states[:, slice_indices, :]",
    "hidden_states[:, -num_logits_to_keep:, :]",
    "hidden_states[:, -logits_to_keep:, :]",
)


def _is_narrowed(node: cst.CSTNode) -> bool:
    return isinstance(node, cst.Subscript) and _NARROWED(cst.SimpleStatementLine([cst.Expr(node)]))


def _slices_hidden_states(stmt: cst.BaseStatement) -> bool:
    """A statement using the logits slicing only in the known subscripts of ``hidden_states``."""
    if not r.variables(stmt) & LOGITS_SLICING:
        return False
    return not r.variables(stmt.visit(_AllLogits())) & LOGITS_SLICING


class _AllLogits(cst.CSTTransformer):
    """``hidden_states[:, -num_logits_to_keep:, :]`` / ``hidden_states[:, slice_indices, :]``
    -> ``hidden_states``: the tuple-cache head computes logits for every position."""

    def leave_Subscript(self, original: cst.Subscript, updated: cst.Subscript) -> cst.BaseExpression:
        return updated.value if _is_narrowed(original) else updated


def _layers_checkpoint_themselves(module: cst.Module) -> bool:
    """GemmaDecoderLayer derives from GradientCheckpointingLayer (its __call__ checkpoints)."""
    hit = s.find_class(module, "GemmaDecoderLayer")
    return bool(hit) and any(s.dotted(b.value) == "GradientCheckpointingLayer" for b in hit[1].bases)


def _embedding_is_scaled(model: cst.ClassDef) -> bool:
    """``self.embed_tokens`` is built from a class that scales the embedding itself (5.x)."""
    init = s.find_method(model, "__init__")
    value = s.find_assignment(s.fn_body(init[1]), "self.embed_tokens") if init else None
    return isinstance(value, cst.Call) and "Scaled" in (s.dotted(value.func) or "")
