"""The generic heads under ``mask-generation``: heads a generic class of the library builds.

From 4.54 on, ``GemmaForSequenceClassification`` and ``GemmaForTokenClassification`` may
inherit ``__init__`` and ``forward`` from ``GenericForSequenceClassification`` /
``GenericForTokenClassification``, which build their model with ``AutoModel.from_config``:
upstream's GemmaModel, not the vacc one.  Both heads then get members of their own from the
templates here (shape ``generic-head`` of ``mask-generation``, whose module docstring is the
contract).
"""

from __future__ import annotations

import libcst as cst

from patches import _layout as lay
from patches import _shapes as s

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


def is_generic(head: str, cls: cst.ClassDef) -> bool:
    """Whether ``cls`` is a head inheriting its body from the library's generic class."""
    return head in GENERIC_HEADS and any(s.dotted(b.value) == GENERIC_HEADS[head] for b in cls.bases)


def rewrite(head: str, cls: cst.ClassDef, cache_field: str) -> cst.ClassDef:
    """A head inheriting everything from a ``Generic…`` class (4.54+): that class builds its
    model with ``AutoModel.from_config``, which knows only upstream's GemmaModel.  The vacc
    head builds the vacc GemmaModel; the sequence classifier also gets its forward here (with
    upstream's last-token search, which ``sequence-lengths`` then rewrites)."""
    template = (
        GENERIC_SEQUENCE_CLASSIFIER if head == "GemmaForSequenceClassification" else GENERIC_TOKEN_CLASSIFIER
    )
    members = lay.parse_stmts(template.replace("__cache_field__", cache_field))
    doc = s.docstring_stmt(s.class_body(cls))
    body = [*([doc] if doc else []), *members]
    if head == "GemmaForSequenceClassification":  # a head of its own; the token classifier keeps
        bases = [b for b in cls.bases if s.dotted(b.value) != GENERIC_HEADS[head]]  # the generic forward
        cls = cls.with_changes(bases=[*bases[:-1], bases[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)])
    return lay.with_class_body(cls, body)
