"""Formatting-only perturbations of Python source, for the formatting-insensitivity tests.

A :class:`Perturbation` rewrites a file without changing what it means: re-wrapped by
``ruff format`` at another line length, with other quotes and trailing commas, then with
comments stripped or added, blank lines removed or added, simple statements joined with
``;``, one-line suites (``if x: y``) and redundant parentheses.  :func:`normalized_ast` is
the yardstick: two sources are the same code when their normalized ASTs are equal.  The only
thing ``ruff format`` changes besides layout is docstring whitespace (it strips and
re-indents docstrings), so the yardstick ignores docstring whitespace too.
"""

from __future__ import annotations

import ast
import functools
import os
import random
import subprocess
from dataclasses import dataclass

import libcst as cst


@functools.cache
def _ruff() -> str:
    """The ruff executable (run directly: ``python -m ruff`` would start a Python first)."""
    from ruff.__main__ import find_ruff_bin

    return os.fsdecode(find_ruff_bin())


def ruff_format(
    source: str, line_length: int, quotes: str = "double", magic_trailing_comma: bool = True
) -> str:
    """``source`` re-wrapped by ``ruff format`` (project configuration ignored)."""
    config = [f"line-length={line_length}", f"format.quote-style='{quotes}'"]
    if not magic_trailing_comma:
        config.append("format.skip-magic-trailing-comma=true")
    args = [_ruff(), "format", "--isolated", "-"]
    for item in config:
        args += ["--config", item]
    proc = subprocess.run(args, input=source, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ruff format failed: {proc.stderr}")
    return proc.stdout


def _clean_docstring(text: str) -> str:
    return "\n".join(line.strip() for line in text.strip().splitlines() if line.strip())


def normalized_ast(source: str) -> str:
    """``ast.dump`` of ``source`` with docstring whitespace normalised: equal for the same code
    however it is formatted (comments, wrapping, quotes, parentheses, ``;``)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                first.value.value = _clean_docstring(first.value.value)
    return ast.dump(tree)


_COMPOUND = (cst.ClassDef, cst.FunctionDef, cst.If, cst.For, cst.While, cst.With, cst.Try)


class _Layout(cst.CSTTransformer):
    """The libcst half of a :class:`Perturbation` (one pass over the tree)."""

    def __init__(self, p: Perturbation) -> None:
        super().__init__()
        self.p = p
        self.rng = random.Random(p.seed)
        self.count = 0

    def _chance(self, rate: float) -> bool:
        return rate > 0 and self.rng.random() < rate

    def _comment(self) -> cst.Comment:
        self.count += 1
        return cst.Comment(f"# perturbed {self.count}")

    # comments
    def leave_EmptyLine(self, original: cst.EmptyLine, updated: cst.EmptyLine) -> cst.EmptyLine:
        return updated.with_changes(comment=None) if self.p.strip_comments else updated

    def leave_TrailingWhitespace(
        self, original: cst.TrailingWhitespace, updated: cst.TrailingWhitespace
    ) -> cst.TrailingWhitespace:
        if self.p.strip_comments and updated.comment is not None:
            updated = updated.with_changes(whitespace=cst.SimpleWhitespace(""), comment=None)
        if updated.comment is None and self._chance(self.p.comment_rate):
            updated = updated.with_changes(whitespace=cst.SimpleWhitespace("  "), comment=self._comment())
        return updated

    def leave_Module(self, original: cst.Module, updated: cst.Module) -> cst.Module:
        header = updated.header
        if self.p.strip_comments:
            header = [line for line in header if line.comment is not None]  # all dropped, no blanks left
        return updated.with_changes(header=header, body=self._join(updated.body))

    # statements: leading lines, ``;`` joins, one-line suites
    def _lines(self, node: cst.CSTNode) -> cst.CSTNode:
        lines = list(node.leading_lines)  # type: ignore[attr-defined]
        if self.p.blank_lines == "none":
            lines = [line for line in lines if line.comment is not None]
        elif self.p.blank_lines == "more":
            lines = [cst.EmptyLine(indent=False), *lines]
        if self._chance(self.p.comment_rate):
            lines.append(cst.EmptyLine(comment=self._comment()))
        return node.with_changes(leading_lines=lines)

    def on_leave(self, original: cst.CSTNode, updated: cst.CSTNode) -> cst.CSTNode:
        updated = super().on_leave(original, updated)  # type: ignore[assignment]
        if isinstance(updated, _COMPOUND) and not isinstance(updated, cst.ClassDef | cst.Try):
            updated = self._suite(updated)
        if isinstance(updated, (cst.SimpleStatementLine, *_COMPOUND)):
            updated = self._lines(updated)
        return updated

    def _suite(self, node: cst.CSTNode) -> cst.CSTNode:
        body = node.body  # type: ignore[attr-defined]
        if (
            isinstance(body, cst.IndentedBlock)
            and len(body.body) == 1
            and isinstance(body.body[0], cst.SimpleStatementLine)
            and not body.body[0].leading_lines
            and body.header.comment is None
            and not body.footer
            and getattr(node, "orelse", None) is None
            and self._chance(self.p.suite_rate)
        ):
            line = body.body[0]
            return node.with_changes(
                body=cst.SimpleStatementSuite(body=line.body, trailing_whitespace=line.trailing_whitespace)
            )
        return node

    def _join(self, body: list) -> list:
        out: list = []
        for stmt in body:
            prev = out[-1] if out else None
            if (
                isinstance(stmt, cst.SimpleStatementLine)
                and isinstance(prev, cst.SimpleStatementLine)
                and not any(line.comment for line in stmt.leading_lines)
                and prev.trailing_whitespace.comment is None
                and self._chance(self.p.join_rate)
            ):
                first = [
                    *prev.body[:-1],
                    prev.body[-1].with_changes(
                        semicolon=cst.Semicolon(whitespace_after=cst.SimpleWhitespace(" "))
                    ),
                ]
                out[-1] = prev.with_changes(
                    body=[*first, *stmt.body], trailing_whitespace=stmt.trailing_whitespace
                )
            else:
                out.append(stmt)
        return out

    def leave_IndentedBlock(
        self, original: cst.IndentedBlock, updated: cst.IndentedBlock
    ) -> cst.IndentedBlock:
        return updated.with_changes(body=self._join(list(updated.body)))

    # redundant parentheses
    def _paren(self, expr: cst.BaseExpression) -> cst.BaseExpression:
        if hasattr(expr, "lpar") and self._chance(self.p.paren_rate):
            return expr.with_changes(lpar=[cst.LeftParen(), *expr.lpar], rpar=[*expr.rpar, cst.RightParen()])
        return expr

    def leave_Assign(self, original: cst.Assign, updated: cst.Assign) -> cst.Assign:
        return updated.with_changes(value=self._paren(updated.value))

    def leave_Return(self, original: cst.Return, updated: cst.Return) -> cst.Return:
        return updated.with_changes(value=self._paren(updated.value)) if updated.value else updated

    def leave_Arg(self, original: cst.Arg, updated: cst.Arg) -> cst.Arg:
        return updated if updated.star else updated.with_changes(value=self._paren(updated.value))


@dataclass(frozen=True)
class Perturbation:
    """One formatting-only rewrite; every field at its default changes nothing."""

    line_length: int | None = None  # ruff format at this line length (None: keep the wrapping)
    quotes: str = "double"
    magic_trailing_comma: bool = True
    strip_comments: bool = False
    comment_rate: float = 0.0  # share of statements and line ends given a new comment
    blank_lines: str = "keep"  # keep | none | more
    join_rate: float = 0.0  # share of consecutive simple statements joined with `;`
    suite_rate: float = 0.0  # share of one-statement blocks put on the header line
    paren_rate: float = 0.0  # share of values and arguments put in redundant parentheses
    seed: int = 0

    def apply(self, source: str) -> str:
        if self.line_length is not None:
            source = ruff_format(source, self.line_length, self.quotes, self.magic_trailing_comma)
        layout = (
            self.strip_comments
            or self.comment_rate
            or self.blank_lines != "keep"
            or self.join_rate
            or self.suite_rate
            or self.paren_rate
        )
        if layout:
            source = cst.parse_module(source).visit(_Layout(self)).code
        return source
