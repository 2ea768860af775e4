"""The base class every codemod of the series derives from.

A codemod here is a real ``libcst.codemod.VisitorBasedCodemodCommand`` (so that
``python -m libcst.tool codemod`` can run it), with three additions the engine relies on:

* ``NAME``, ``TARGETS`` and ``SHAPES`` class attributes: the user-facing name, the
  qualified names it may change, add or remove, and the upstream shapes it knows;
* ``rewrite(module)``: the codemod's work, done on the module's top-level statements
  only.  A full visit of a 1,400-line module costs more than parsing it, so the visitor
  stops at the module (``visit_Module`` returns False) and each codemod walks straight to
  its targets.  That keeps the whole series within a small multiple of one parse;
* ``met(shape)`` to record which shape it recognised and ``drift(...)`` to refuse a shape
  it does not know.  Drift is an exception: a codemod never guesses.

Before ``rewrite`` runs, the units named in ``TARGETS`` are laid out one simple statement
per line (``a; b`` split, ``if x: y`` indented; see ``_layout.split_targets``), so that a
codemod matching "the statement ``x = ...``" is not defeated by how upstream wrapped it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import ClassVar

import libcst as cst
from libcst.codemod import Codemod, CodemodContext, VisitorBasedCodemodCommand

from patches import _layout, _shapes

#: The traits of the canonical family, Gemma, whose names the codemods are written in (the same as
#: ``patcher.upstream.families.GEMMA.traits``; patches/ imports nothing of patcher's).
CANONICAL_TRAITS = {"embedding_normaliser": True, "sliding_window": False}


@dataclass
class Drift(Exception):
    """A target whose upstream form no known shape of the codemod matches.

    ``anchor`` is the qualified name of the upstream unit where the problem was seen (the
    engine turns it into ``file:line`` of the upstream file); ``nearest`` is the closest
    thing found, for a maintainer to start from.
    """

    codemod: str
    target: str
    known: tuple[str, ...]
    found: str
    anchor: str | None = None
    nearest: str | None = None
    #: The upstream statement at fault, when there is one (the engine gives its line).
    node: cst.CSTNode | None = None

    def __str__(self) -> str:
        return f"{self.codemod}: {self.target}: {self.found}"


@dataclass(frozen=True)
class Change:
    """What one codemod did to one module: the shapes it met and the lines it changed."""

    shapes: tuple[str, ...]
    added: int
    removed: int


class VaccCodemod(VisitorBasedCodemodCommand):
    """Base class of the series' codemods (see the module docstring)."""

    NAME: ClassVar[str]
    DESCRIPTION: ClassVar[str]
    TARGETS: ClassVar[tuple[str, ...]]
    SHAPES: ClassVar[dict[str, str]]
    #: Upstream units this codemod removes whole, by a rule of the contract (qualified name ->
    #: the rule and its reason): the FlashAttention/SDPA variants, the static-cache hooks.  Their
    #: insides never reach an output, by design; the mutation tier reports them apart.
    DROPS: ClassVar[dict[str, str]] = {}
    #: The upstream file the codemod applies to.
    FILE: ClassVar[str] = "modeling_gemma.py"

    def __init__(self, context: CodemodContext | None = None) -> None:
        context = context or CodemodContext()
        cls = type(self)
        if cls.__dict__.get("_no_matcher_decorators"):
            # libcst's matcher-decorator bookkeeping inspects every method, once when the
            # codemod is made (~15 ms) and again at its first visit (~9 ms, the gating
            # matchers of @m.call_if_inside); these codemods use neither @m.visit/@m.leave
            # nor gating matchers, so the first instance of a class finds that out and the
            # others skip both.
            Codemod.__init__(self, context)
            cst.CSTTransformer.__init__(self)
            self._MatcherDecoratableTransformer__matchers = {}
            self._extra_visit_funcs, self._extra_leave_funcs = {}, {}
        else:
            super().__init__(context)
            cls._no_matcher_decorators = not (
                self._extra_visit_funcs or self._extra_leave_funcs or self._matchers
            )
        self._shapes: list[str] = []
        self.change: Change | None = None

    # -- what subclasses implement -------------------------------------------------------
    def rewrite(self, module: cst.Module) -> cst.Module:
        """Return the module with this codemod's targets rewritten."""
        raise NotImplementedError

    # -- helpers for subclasses ----------------------------------------------------------
    def trait(self, name: str) -> bool:
        """A trait of the model family being edited (``embedding_normaliser``, ``sliding_window``;
        see ``patcher.upstream.families.Traits``), as the engine put it in the context; run
        outside patcher (``python -m libcst.tool codemod``), the canonical family's, Gemma's."""
        traits = self.context.scratch.get("traits")
        return bool(getattr(traits, name)) if traits is not None else CANONICAL_TRAITS[name]

    def met(self, shape: str) -> None:
        """Record that a target was recognised in ``shape`` (one of ``SHAPES``)."""
        assert shape in self.SHAPES, f"{self.NAME}: unknown shape name {shape!r}"
        if shape not in self._shapes:
            self._shapes.append(shape)

    def drift(
        self,
        target: str,
        found: str,
        *,
        anchor: str | None = None,
        nearest: str | None = None,
        node: cst.CSTNode | None = None,
    ) -> Drift:
        """Build the exception for a target in a shape this codemod does not know; ``node`` is
        the upstream statement at fault, if any (its line is reported)."""
        return Drift(self.NAME, target, tuple(self.SHAPES), found, anchor or target, nearest, node)

    # -- libcst plumbing -----------------------------------------------------------------
    def transform_module(self, tree: cst.Module) -> cst.Module:
        # No metadata is used, so skip libcst's MetadataWrapper (it deep-copies the tree).
        return self.transform_module_impl(tree)

    def visit_Module(self, node: cst.Module) -> bool:
        return False

    def leave_Module(self, original_node: cst.Module, updated_node: cst.Module) -> cst.Module:
        # Targets are matched statement by statement: `a; b` lines and one-line blocks in them
        # are laid out one statement per line first (a no-op on every real upstream file).
        result = self.rewrite(_layout.split_targets(updated_node, self.TARGETS))
        self.change = Change(tuple(self._shapes), *_count_lines(updated_node, result))
        return result


def _count_lines(before: cst.Module, after: cst.Module) -> tuple[int, int]:
    """Lines added and removed, rendering only what changed: top-level statements compared
    by identity, and inside a changed class only its changed members."""
    added = removed = 0
    if before.header is not after.header:
        plus, minus = _diff_counts(_render_lines(before, before.header), _render_lines(after, after.header))
        added, removed = plus, minus
    plus, minus = _count_body(before, after, list(before.body), list(after.body))
    return added + plus, removed + minus


def _count_body(before: cst.Module, after: cst.Module, old: list, new: list) -> tuple[int, int]:
    added = removed = 0
    matcher = difflib.SequenceMatcher(a=[id(x) for x in old], b=[id(x) for x in new], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        a, b = old[i1:i2], new[j1:j2]
        if (
            len(a) == len(b) == 1
            and isinstance(a[0], cst.ClassDef)
            and isinstance(b[0], cst.ClassDef)
            and a[0].name.value == b[0].name.value
        ):
            head_a = before.code_for_node(a[0].with_changes(body=cst.IndentedBlock([])))
            head_b = after.code_for_node(b[0].with_changes(body=cst.IndentedBlock([])))
            plus, minus = _diff_counts(head_a.splitlines(), head_b.splitlines())
            inner = _count_body(before, after, list(a[0].body.body), list(b[0].body.body))
            plus, minus = plus + inner[0], minus + inner[1]
        else:
            plus, minus = _diff_counts(_render_lines(before, a), _render_lines(after, b))
        added += plus
        removed += minus
    return added, removed


def _render_lines(module: cst.Module, nodes: list) -> list[str]:
    indent, newline = module.default_indent, module.default_newline
    return "".join(_shapes.code(x, indent, newline) for x in nodes).splitlines()


def _diff_counts(a: list[str], b: list[str]) -> tuple[int, int]:
    plus = minus = 0
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag != "equal":
            minus += i2 - i1
            plus += j2 - j1
    return plus, minus
