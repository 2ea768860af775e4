"""library-imports — 修改库引用方式: absolute library imports, the vacc config, no flash-attn.

Why: the vacc file is loaded by ``trust_remote_code`` from a checkpoint directory, outside
the ``transformers`` package, so relative imports of the library (``from ...x import y``)
cannot resolve; the config must come from the sibling ``configuration_gemma_vacc.py``; and
the compiler traces the module, so flash-attn imports and ``torch.fx.wrap`` must go.

Shapes recognised (module level only):

* ``relative-imports`` — ``from ...pkg import x`` / ``from .configuration_gemma import
  GemmaConfig``: library imports become ``from transformers.pkg import x``; the config import
  becomes ``from .configuration_gemma_vacc import GemmaConfig``.
* ``absolute-imports`` — already absolute with the vacc config import (our own output).
* ``flash-attn-guard`` — ``if is_flash_attn_…_available(): <imports>``: removed.
* ``fx-wrap`` — ``if is_torch_fx_available(): … torch.fx.wrap(…)``: removed.

Also owns the header: the generated-file notice goes right after upstream's licence
comments, and (shape ``modular-banner``, shared with config-imports) upstream's banner
"This file was automatically generated from …/modular_gemma.py. Do NOT edit …" is dropped
with a ``# vacc: dropped (modular-banner)`` line: its advice is wrong inside a vacc file,
which is changed through the codemods, as the notice says.  A module-level ``if`` that imports ``flash_attn`` in another form, or a module
without the config import, is drift.
"""

from __future__ import annotations

import re

import libcst as cst
import libcst.matchers as m

from patches import NOTICE_MARK
from patches import _layout as lay
from patches import _shapes as s
from patches._base import VaccCodemod

CONFIG_MODULE = "configuration_gemma"
VACC_CONFIG_MODULE = "configuration_gemma_vacc"

_FLASH_GUARD = m.If(test=m.Call(func=m.Name(value=m.MatchIfTrue(lambda n: n.startswith("is_flash_attn")))))
_FX_GUARD = m.If(test=m.Call(func=m.Name("is_torch_fx_available")))
_FX_WRAP = m.Call(
    func=m.Attribute(value=m.Attribute(value=m.Name("torch"), attr=m.Name("fx")), attr=m.Name("wrap"))
)


def _imports_flash_attn(stmt: cst.CSTNode) -> bool:
    """Whether a module-level statement (or an ``if``/``try`` block) imports flash_attn."""
    found = []

    def look(small: cst.BaseSmallStatement) -> cst.BaseSmallStatement:
        if isinstance(small, cst.ImportFrom) and not small.relative and small.module is not None:
            found.append(s.dotted(small.module) or "")
        elif isinstance(small, cst.Import):
            found.extend(s.dotted(alias.name) or "" for alias in small.names)
        return small

    lay.map_small(stmt, look)
    return any(name == "flash_attn" or name.startswith("flash_attn.") for name in found)


_BANNER_TEXT = re.compile(r"automatically generated from \S*modular_\w+\.py")
BANNER_DROPPED = (
    '# vacc: dropped (modular-banner): upstream\'s "generated from modular_*.py, do not edit" banner;'
    " this file is patcher's output: see the notice below"
)


def _is_rule(line: cst.EmptyLine) -> bool:
    """A banner rule: a comment of ``🚨`` (or other non-word marks) only."""
    text = line.comment.value.lstrip("#").strip() if line.comment else ""
    return bool(text) and not any(ch.isalnum() for ch in text)


def drop_modular_banner(header: list[cst.EmptyLine]) -> tuple[list[cst.EmptyLine], bool]:
    """``header`` without upstream's "generated from modular_*.py" banner, and whether it had one.

    The banner is a ruled block: a rule line, comment lines one of which says "automatically
    generated from …/modular_x.py", a rule line.  Our own drop line stands in its place.  The
    same words outside such a block are left alone: where such a block would end is not known,
    and a comment changes nothing the file computes.
    """
    at = next(
        (i for i, line in enumerate(header) if line.comment and _BANNER_TEXT.search(line.comment.value)),
        None,
    )
    if at is None or at == 0 or not _is_rule(header[at - 1]):
        return header, False
    end = at + 1
    while end < len(header) and header[end].comment is not None and not _is_rule(header[end]):
        end += 1
    if end == len(header) or not _is_rule(header[end]):
        return header, False
    dropped = cst.EmptyLine(indent=False, comment=cst.Comment(BANNER_DROPPED))
    return [*header[: at - 1], dropped, *header[end + 1 :]], True


def with_notice(module: cst.Module, notice: str | None) -> cst.Module:
    """The module with the patcher notice (replacing any earlier one) after the licence."""
    header = list(module.header)
    start = next(
        (i for i, line in enumerate(header) if line.comment and line.comment.value.startswith(NOTICE_MARK)),
        None,
    )
    if start is not None:  # drop the old notice: from its first line to the next non-comment
        end = start
        while end < len(header) and header[end].comment is not None:
            end += 1
        if start > 0 and header[start - 1].comment is not None and header[start - 1].comment.value == "#":
            start -= 1
        header[start:end] = []
    if notice:
        lines = [cst.EmptyLine(comment=cst.Comment("#"))] if header else []
        lines += [cst.EmptyLine(comment=cst.Comment(text.rstrip())) for text in notice.splitlines()]
        header += lines
    return module.with_changes(header=header)


class LibraryImports(VaccCodemod):
    """Absolute library imports, ``.configuration_gemma_vacc``, no flash-attn or fx wrapping."""

    NAME = "library-imports"
    DESCRIPTION = (
        "Absolute transformers imports, GemmaConfig from .configuration_gemma_vacc, no flash-attn/fx-wrap."
    )
    TARGETS = ("<header>", "<imports>", "<flash-attn-guard>", "<fx-wrap>")
    SHAPES = {
        "relative-imports": "module-level `from ...x import y` and `from .configuration_gemma import GemmaConfig`",
        "absolute-imports": "absolute imports with `from .configuration_gemma_vacc import GemmaConfig`",
        "flash-attn-guard": "`if is_flash_attn_*_available(): <imports>` at module level",
        "fx-wrap": "`if is_torch_fx_available(): ... torch.fx.wrap(...)` at module level",
        "modular-banner": 'upstream\'s "generated from modular_gemma.py, do not edit" banner: dropped',
    }

    def rewrite(self, module: cst.Module) -> cst.Module:
        self.config_import = False
        body: list[cst.BaseStatement] = []
        for stmt in module.body:
            if m.matches(stmt, _FLASH_GUARD):
                self.met("flash-attn-guard")
                continue
            if m.matches(stmt, _FX_GUARD) and s.contains(stmt, _FX_WRAP):
                self.met("fx-wrap")
                continue
            if _imports_flash_attn(stmt):
                raise self.drift(
                    "<flash-attn-guard>", f"flash_attn imported outside a known guard: {_first_line(stmt)}"
                )
            body.append(lay.map_small(stmt, self._import))
        if not self.config_import:
            raise self.drift(
                "<imports>",
                "no module-level `from .configuration_gemma import GemmaConfig`",
                nearest=next((_first_line(x) for x in module.body if "onfig" in _first_line(x)), None),
            )
        header, banner = drop_modular_banner(list(module.header))
        if banner:
            self.met("modular-banner")
        return with_notice(module.with_changes(body=body, header=header), self.context.scratch.get("notice"))

    def _import(self, node: cst.BaseSmallStatement) -> cst.BaseSmallStatement:
        if not isinstance(node, cst.ImportFrom):
            return node
        if len(node.relative) == 1 and m.matches(node.module, m.Name(CONFIG_MODULE)):
            self.config_import = True
            self.met("relative-imports")
            return node.with_changes(module=cst.Name(VACC_CONFIG_MODULE))
        if len(node.relative) == 1 and m.matches(node.module, m.Name(VACC_CONFIG_MODULE)):
            self.config_import = True
            self.met("absolute-imports")
            return node
        if node.relative:
            self.met("relative-imports")
            return lay.absolute_import(node)
        return node


def _first_line(node: cst.CSTNode) -> str:
    return s.render(node).strip().splitlines()[0] if s.render(node).strip() else ""
