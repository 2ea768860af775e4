"""Layout helpers of the codemods: building code from templates, splicing bodies, one
statement per line, absolute imports and renames.

The codemods find what they rewrite with the vocabulary of :mod:`patches._shapes` and build
what replaces it with these helpers, which never decide what a unit is, only how new code
is put together and laid out (blank lines, one statement per line, formatting kept).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence

import libcst as cst
import libcst.matchers as m

from patches._shapes import PACKAGE, render


# -- building code ---------------------------------------------------------------------------
def parse_stmts(source: str) -> list[cst.BaseStatement]:
    """Parse (dedented) source into statements, ready to splice into any block.

    A comment heading the source stays with the first statement (libcst would otherwise
    keep it in the throwaway module's header)."""
    module = cst.parse_module(textwrap.dedent(source).lstrip("\n")).visit(_BlankLinesUnindented())
    body = list(module.body)
    if module.header and body:
        body[0] = body[0].with_changes(leading_lines=[*module.header, *body[0].leading_lines])
    return body


class _BlankLinesUnindented(cst.CSTTransformer):
    """Blank lines of a template render empty wherever it is spliced (not indented to the
    block it lands in, which would leave trailing whitespace)."""

    def leave_EmptyLine(self, original: cst.EmptyLine, updated: cst.EmptyLine) -> cst.EmptyLine:
        return (
            updated
            if updated.comment
            else updated.with_changes(indent=False, whitespace=cst.SimpleWhitespace(""))
        )


def parse_def(source: str) -> cst.FunctionDef:
    """Parse one ``def`` (with its decorators) from dedented source."""
    (node,) = parse_stmts(source)
    assert isinstance(node, cst.FunctionDef)
    return node


# -- editing ---------------------------------------------------------------------------------
def replace_in(body: Sequence[cst.CSTNode], index: int, *new: cst.CSTNode) -> list:
    """``body`` with the statement at ``index`` replaced by ``new`` (nothing: removed)."""
    return [*body[:index], *new, *body[index + 1 :]]


def with_class_body(cls: cst.ClassDef, body: Sequence[cst.CSTNode]) -> cst.ClassDef:
    return cls.with_changes(body=cls.body.with_changes(body=list(body)))


def with_fn_body(fn: cst.FunctionDef, body: Sequence[cst.CSTNode]) -> cst.FunctionDef:
    return fn.with_changes(body=fn.body.with_changes(body=list(body)))


def keep_leading(old: cst.CSTNode, new: cst.CSTNode) -> cst.CSTNode:
    """Give ``new`` the leading blank lines and comments of ``old``."""
    return new.with_changes(leading_lines=old.leading_lines)  # type: ignore[attr-defined]


def blank_lines(node: cst.CSTNode, n: int) -> cst.CSTNode:
    """``node`` preceded by exactly ``n`` empty lines (and no comments)."""
    return node.with_changes(leading_lines=[cst.EmptyLine(indent=False)] * n)  # type: ignore[attr-defined]


# -- one statement per line --------------------------------------------------------------------
#: The attributes of a compound statement holding its blocks (or further clauses).
_CLAUSES = ("body", "orelse", "handlers", "finalbody", "cases")


def is_compact(stmts: Sequence[cst.CSTNode]) -> bool:
    """Whether any of ``stmts`` (at any depth) puts several simple statements on one line
    (``a = 1; b = 2``) or a block on its header line (``if x: y``).

    Only statements are looked at, never expressions, so this costs next to nothing on the
    (usual) files that have neither."""
    for stmt in stmts:
        if isinstance(stmt, cst.SimpleStatementLine):
            if len(stmt.body) > 1:
                return True
            continue
        for attr in _CLAUSES:
            child = getattr(stmt, attr, None)
            if isinstance(child, cst.SimpleStatementSuite):
                return True
            if isinstance(child, cst.IndentedBlock):
                inner = child.body
            elif isinstance(child, list | tuple):
                inner = child
            elif isinstance(child, cst.CSTNode):
                inner = [child]
            else:
                continue
            if is_compact(inner):
                return True
    return False


def split_line(line: cst.SimpleStatementLine) -> list[cst.SimpleStatementLine]:
    """``a; b`` as two lines (leading comments go with the first, the trailing one with the
    last); a line holding one statement comes back as it is."""
    if len(line.body) < 2:
        return [line]
    last = len(line.body) - 1
    return [
        cst.SimpleStatementLine(
            body=[small.with_changes(semicolon=cst.MaybeSentinel.DEFAULT)],
            leading_lines=line.leading_lines if i == 0 else (),
            trailing_whitespace=line.trailing_whitespace if i == last else cst.TrailingWhitespace(),
        )
        for i, small in enumerate(line.body)
    ]


def _split_lines(body: Sequence[cst.CSTNode]) -> list:
    return [
        x
        for stmt in body
        for x in (split_line(stmt) if isinstance(stmt, cst.SimpleStatementLine) else [stmt])
    ]


def _indented(suite: cst.SimpleStatementSuite) -> cst.IndentedBlock:
    """``if x: a; b`` -> the block of ``a`` and ``b`` on lines of their own."""
    line = cst.SimpleStatementLine(body=suite.body, trailing_whitespace=suite.trailing_whitespace)
    return cst.IndentedBlock(body=split_line(line))


class _OneStatementPerLine(cst.CSTTransformer):
    """Every block laid out one simple statement per line (see :func:`split_lines`)."""

    def on_visit(self, node: cst.CSTNode) -> bool:
        return not isinstance(node, cst.BaseExpression | cst.BaseSmallStatement)

    def leave_IndentedBlock(
        self, original: cst.IndentedBlock, updated: cst.IndentedBlock
    ) -> cst.IndentedBlock:
        return updated.with_changes(body=_split_lines(updated.body))

    def on_leave(self, original: cst.CSTNode, updated: cst.CSTNode) -> cst.CSTNode:
        updated = super().on_leave(original, updated)  # type: ignore[assignment]
        if isinstance(getattr(updated, "body", None), cst.SimpleStatementSuite):
            return updated.with_changes(body=_indented(updated.body))  # type: ignore[attr-defined]
        return updated


def split_lines(node: cst.CSTNode) -> cst.CSTNode:
    """``node`` with one simple statement per line: ``a; b`` lines split, one-line blocks
    (``if x: y``, ``def f(): return 1``) indented.  The same object when there is nothing to
    split, which is the case for every real upstream file: codemods then match one statement
    per line without caring how upstream was formatted."""
    if not is_compact([node]):
        return node
    return node.visit(_OneStatementPerLine())


def _defines(stmt: cst.CSTNode, name: str) -> bool:
    """Whether a statement defines ``name`` (a class, a def, or an assignment to the name on
    a line of its own or among ``;``-joined statements).  Plain isinstance checks: cheap."""
    if isinstance(stmt, cst.ClassDef | cst.FunctionDef):
        return stmt.name.value == name
    if not isinstance(stmt, cst.SimpleStatementLine):
        return False
    for small in stmt.body:
        if isinstance(small, cst.Assign):
            if any(isinstance(t.target, cst.Name) and t.target.value == name for t in small.targets):
                return True
        elif isinstance(small, cst.AnnAssign) and isinstance(small.target, cst.Name):
            if small.target.value == name:
                return True
    return False


def _split_member(body: list, parts: list[str]) -> list | None:
    """``body`` with the unit ``parts`` names laid out one statement per line; None if unchanged."""
    for i, stmt in enumerate(body):
        if not _defines(stmt, parts[0]):
            continue
        if isinstance(stmt, cst.SimpleStatementLine):
            return None if len(stmt.body) < 2 else [*body[:i], *split_line(stmt), *body[i + 1 :]]
        if len(parts) == 1:
            new = split_lines(stmt)
        elif isinstance(stmt, cst.ClassDef):
            block = stmt.body if isinstance(stmt.body, cst.IndentedBlock) else _indented(stmt.body)
            inner = _split_member(list(block.body), parts[1:])
            if inner is not None or block is not stmt.body:
                new = stmt.with_changes(body=block.with_changes(body=inner or block.body))
            else:
                new = stmt
        else:
            return None
        return None if new is stmt else replace_in(body, i, new)
    return None


def split_targets(module: cst.Module, targets: Sequence[str]) -> cst.Module:
    """``module`` with each unit that ``targets`` names (``GemmaModel.forward``,
    ``GemmaAttention``, ``GEMMA_ATTENTION_CLASSES``) laid out one statement per line, so that a
    codemod matches statements, not lines.  Pseudo-targets (``<imports>``) are left alone;
    the same module comes back when no unit needs it."""
    body = list(module.body)
    changed = False
    for target in targets:
        parts = target.split(".")
        if not all(part.isidentifier() for part in parts):
            continue
        new = _split_member(body, parts)
        if new is not None:
            body, changed = new, True
    return module.with_changes(body=body) if changed else module


# -- imports ---------------------------------------------------------------------------------
def absolute_module(node: cst.ImportFrom, package: str = PACKAGE) -> str | None:
    """The absolute module a relative ``from .x import y`` names, or None if absolute."""
    if not node.relative:
        return None
    parts = package.split(".")
    base = parts[: len(parts) - (len(node.relative) - 1)]
    if node.module is not None:
        base.append(render(node.module))
    return ".".join(base)


def absolute_import(node: cst.ImportFrom, package: str = PACKAGE) -> cst.ImportFrom:
    """``from ...x import y`` made ``from transformers.x import y`` (formatting kept)."""
    target = absolute_module(node, package)
    if target is None:
        return node
    return node.with_changes(relative=[], module=cst.parse_expression(target))


def map_small(
    stmt: cst.CSTNode, fn: Callable[[cst.BaseSmallStatement], cst.BaseSmallStatement]
) -> cst.CSTNode:
    """``stmt`` with ``fn`` applied to each of its small statements, looking inside module-level
    ``if``/``try`` blocks (one-line ones too: ``if x: import y``) but not into classes or
    functions (imports live at module level)."""
    if isinstance(stmt, cst.BaseSmallStatement):
        return fn(stmt)
    if isinstance(stmt, cst.SimpleStatementLine):
        return stmt.with_changes(body=[fn(x) for x in stmt.body])
    if not isinstance(stmt, cst.If | cst.Else | cst.Try | cst.ExceptHandler | cst.Finally):
        return stmt
    changes: dict = {"body": stmt.body.with_changes(body=[map_small(x, fn) for x in stmt.body.body])}
    for attr in ("orelse", "finalbody"):
        if getattr(stmt, attr, None) is not None:
            changes[attr] = map_small(getattr(stmt, attr), fn)
    if isinstance(stmt, cst.Try):
        changes["handlers"] = [map_small(h, fn) for h in stmt.handlers]
    return stmt.with_changes(**changes)


def drop_items(items: Sequence, pred: Callable[[cst.CSTNode], bool]) -> list:
    """``items`` (arguments or parameters) without those matching ``pred``, moving the comma
    of a removed last item to the new last one so the closing bracket keeps its place."""
    kept = [x for x in items if not pred(x)]
    if kept and items and pred(items[-1]) and kept[-1] is not items[-1]:
        kept[-1] = kept[-1].with_changes(comma=items[-1].comma)
    return kept


def fill(template: cst.CSTNode, **slots: cst.CSTNode) -> cst.CSTNode:
    """``template`` with every name ``__slot__`` replaced by the node given for ``slot``.

    Splicing nodes (not text) keeps a multi-line upstream expression correctly indented
    wherever the template puts it."""
    for slot, node in slots.items():
        template = m.replace(template, m.Name(f"__{slot}__"), lambda _old, _captures, node=node: node)
    return template


class _Rename(cst.CSTTransformer):
    """Rename variables, leaving attribute names alone (``outputs.cache`` keeps its ``cache``)."""

    def __init__(self, names: dict[str, cst.BaseExpression]) -> None:
        super().__init__()
        self.names = names

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        return False  # the value is renamed in leave_Attribute; the attribute's own name never

    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute) -> cst.BaseExpression:
        return updated.with_changes(value=updated.value.visit(self))

    def visit_Arg(self, node: cst.Arg) -> bool:
        return True

    def leave_Arg(self, original: cst.Arg, updated: cst.Arg) -> cst.Arg:
        # a keyword is a parameter name of the callee, not a variable: keep it as it was
        return updated.with_changes(keyword=original.keyword)

    def visit_Param(self, node: cst.Param) -> bool:
        return True

    def leave_Name(self, original: cst.Name, updated: cst.Name) -> cst.BaseExpression:
        return self.names.get(updated.value, updated)


def rename(node: cst.CSTNode, names: dict[str, cst.BaseExpression]) -> cst.CSTNode:
    """``node`` with the variables in ``names`` replaced (attribute names and call keywords kept)."""
    return node.visit(_Rename(names))
