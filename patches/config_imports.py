"""config-imports — ``configuration_gemma_vacc.py`` is upstream's config with absolute imports.

Why: like the modeling file, the config is loaded from a checkpoint directory by
``trust_remote_code``, where ``from ...configuration_utils import PretrainedConfig`` cannot
resolve.

Shapes recognised (module level, also under ``if``/``try``):

* ``relative-imports`` — ``from ...x import y`` / ``from ..x import y``: made absolute
  (``transformers.x``, ``transformers.models.x``).
* ``absolute-imports`` — no relative import left (our own output).
* ``modular-banner`` — upstream's "generated from modular_gemma.py, do not edit" banner:
  dropped, as in library-imports.

A config file that defines no ``GemmaConfig`` class is drift.
"""

from __future__ import annotations

import libcst as cst

from patches import _layout as lay
from patches import _shapes as s
from patches._base import VaccCodemod
from patches.library_imports import drop_modular_banner, with_notice


class ConfigImports(VaccCodemod):
    """Absolute imports in ``configuration_gemma.py``."""

    NAME = "config-imports"
    DESCRIPTION = "configuration_gemma.py with absolute transformers imports."
    TARGETS = ("<imports>",)
    SHAPES = {
        "relative-imports": "module-level `from ...x import y`",
        "absolute-imports": "no relative import (already rewritten)",
        "modular-banner": 'upstream\'s "generated from modular_gemma.py, do not edit" banner: dropped',
    }
    FILE = "configuration_gemma.py"

    def rewrite(self, module: cst.Module) -> cst.Module:
        if s.find_class(module, "GemmaConfig") is None:
            raise self.drift(
                "<imports>",
                "configuration_gemma.py defines no class GemmaConfig",
                nearest=", ".join(s.names(module.body)) or None,
            )
        body = [lay.map_small(stmt, self._import) for stmt in module.body]
        if not self._shapes:
            self.met("absolute-imports")
        header, banner = drop_modular_banner(list(module.header))
        if banner:
            self.met("modular-banner")
        return with_notice(module.with_changes(body=body, header=header), self.context.scratch.get("notice"))

    def _import(self, node: cst.BaseSmallStatement) -> cst.BaseSmallStatement:
        if isinstance(node, cst.ImportFrom) and node.relative:
            self.met("relative-imports")
            return lay.absolute_import(node)
        return node
