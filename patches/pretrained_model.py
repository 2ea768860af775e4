"""pretrained-model — GemmaPreTrainedModel as in Llama 4.31: no backend or cache-class support.

Why: ``PreTrainedModel`` routes a model to FlashAttention/SDPA/flex attention, ``Cache``
objects, static caches or ``torch.compile`` according to the ``_supports_*`` flags its
subclass declares.  The vacc model has one eager attention and a tuple cache, so every such
flag must say no, and the static-cache hooks (``_setup_cache``/``_reset_cache``) must go.
Everything else (``config_class``, ``base_model_prefix``, ``_no_split_modules``,
``_init_weights``, gradient checkpointing support …) is what the release's
``PreTrainedModel`` needs to load weights and initialise, and stays upstream's.

Shapes recognised:

* ``backend-flags`` — class attributes ``_supports_flash_attn_2``, ``_supports_sdpa``,
  ``_supports_cache_class``, … set to True, and/or ``_setup_cache``/``_reset_cache``: each
  known flag becomes ``= False``, the hooks are removed;
* ``no-backends`` — every known flag already False and no hooks (this codemod's output).

A ``_supports_*`` flag (or ``_can_compile_fullgraph``) this codemod does not know is drift:
a new routing switch must be decided on by a maintainer, not inherited silently.
"""

from __future__ import annotations

import libcst as cst
import libcst.matchers as m

from patches import _layout as lay
from patches import _shapes as s
from patches._base import VaccCodemod

#: Flags that route a model to another attention backend, cache class or compile path.
BACKEND_FLAGS = (
    "_supports_flash_attn_2",
    "_supports_flash_attn",
    "_supports_flash_attn_3",
    "_supports_sdpa",
    "_supports_flex_attn",
    "_supports_cache_class",
    "_supports_static_cache",
    "_supports_quantized_cache",
    "_supports_attention_backend",
    "_can_compile_fullgraph",
)
#: Flags about weight handling that are safe to keep as upstream has them.
NEUTRAL_FLAGS = ("_supports_param_buffer_assignment",)
HOOKS = ("_setup_cache", "_reset_cache")


class PretrainedModel(VaccCodemod):
    """``GemmaPreTrainedModel`` declaring no backend, cache-class, static-cache or compile support."""

    NAME = "pretrained-model"
    DESCRIPTION = (
        "GemmaPreTrainedModel declares no FlashAttention/SDPA/flex/cache-class/static-cache/compile support."
    )
    TARGETS = ("GemmaPreTrainedModel", *(f"GemmaPreTrainedModel.{n}" for n in (*BACKEND_FLAGS, *HOOKS)))
    DROPS = {
        f"GemmaPreTrainedModel.{n}": "static-cache-hooks: the vacc model has no static cache" for n in HOOKS
    }
    SHAPES = {
        "backend-flags": "`_supports_*` flags set to True and/or _setup_cache/_reset_cache hooks",
        "no-backends": "every known flag False, no static-cache hooks (this codemod's output)",
    }

    def rewrite(self, module: cst.Module) -> cst.Module:
        hit = s.find_class(module, "GemmaPreTrainedModel")
        if hit is None:
            raise self.drift(
                "GemmaPreTrainedModel",
                "no module-level class GemmaPreTrainedModel",
                nearest=next((n for n in s.names(module.body) if "Pre" in n), None),
            )
        i, cls = hit
        self._changed = False
        body: list[cst.BaseStatement] = []
        for stmt in s.class_body(cls):
            if s.stmt_name(stmt) in HOOKS:
                self._changed = True
                continue
            if isinstance(stmt, cst.SimpleStatementLine):
                stmt = stmt.with_changes(body=[self._flag(x) for x in stmt.body])
            body.append(stmt)
        self.met("backend-flags" if self._changed else "no-backends")
        if not self._changed:
            return module
        return module.with_changes(body=lay.replace_in(module.body, i, lay.with_class_body(cls, body)))

    def _flag(self, small: cst.BaseSmallStatement) -> cst.BaseSmallStatement:
        """A routing flag (plain, annotated, or one of several on a line) set to False."""
        hit = s.assignment(small)
        if hit is None:
            return small
        name, value = hit
        if not (name.startswith("_supports_") or name == "_can_compile_fullgraph") or name in NEUTRAL_FLAGS:
            return small
        if name not in BACKEND_FLAGS:
            raise self.drift(
                f"GemmaPreTrainedModel.{name}", f"unknown routing flag {name}", anchor="GemmaPreTrainedModel"
            )
        if value is None or m.matches(value, m.Name("False")):
            return small
        self._changed = True
        return small.with_changes(value=cst.Name("False"))
