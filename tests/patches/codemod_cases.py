"""The before/after helper shared by the codemod tests (libcst's ``CodemodTest`` as functions).

``assert_codemod`` is ``CodemodTest.assertCodemod`` plus the shapes the codemod reports;
plain functions let the cases be ``pytest.mark.parametrize``d with readable ids, pyupgrade
style (``*_noop`` ids for inputs that must come back unchanged).
"""

from __future__ import annotations

import ast

import libcst as cst
import pytest
from libcst.codemod import CodemodContext, CodemodTest

from patches._base import Change, Drift, VaccCodemod

fixture = CodemodTest.make_fixture_data


def apply(
    codemod: type[VaccCodemod], source: str, *, notice: str | None = None, traits: object | None = None
) -> tuple[str, Change]:
    """Run one codemod on (dedented) ``source``: the new source, the shapes met, the lines changed.
    ``traits``: another model family's (``patcher.upstream.families.Traits``), as the engine passes them."""
    context = CodemodContext(filename=codemod.FILE)
    context.scratch["notice"] = notice
    context.scratch["traits"] = traits
    instance = codemod(context)
    tree = instance.transform_module(cst.parse_module(fixture(source)))
    assert instance.change is not None
    return tree.code, instance.change


def assert_codemod(
    codemod: type[VaccCodemod],
    before: str,
    after: str,
    shapes: tuple[str, ...],
    *,
    notice: str | None = None,
    traits: object | None = None,
) -> None:
    """``before`` becomes exactly ``after``, and the codemod says which shapes it met."""
    code, change = apply(codemod, before, notice=notice, traits=traits)
    assert code == fixture(after)
    assert change.shapes == shapes


def assert_noop(codemod: type[VaccCodemod], source: str, shapes: tuple[str, ...], **kw: str | None) -> None:
    """``source`` comes back byte for byte, and the codemod reports no line changed."""
    assert_codemod(codemod, source, source, shapes, **kw)
    _, change = apply(codemod, source, **kw)
    assert (change.added, change.removed) == (0, 0)


def assert_idempotent(codemod: type[VaccCodemod], source: str, **kw: str | None) -> None:
    """Applying the codemod twice gives what applying it once gives."""
    once, _ = apply(codemod, source, **kw)
    twice, _ = apply(codemod, once, **kw)
    assert twice == once


def assert_drift(
    codemod: type[VaccCodemod], source: str, target: str, *, traits: object | None = None
) -> Drift:
    """The codemod refuses ``source`` with a Drift naming itself, ``target`` and its shapes."""
    with pytest.raises(Drift) as info:
        apply(codemod, source, traits=traits)
    drift = info.value
    assert drift.codemod == codemod.NAME
    assert drift.target == target
    assert drift.known == tuple(codemod.SHAPES)
    assert drift.found
    assert target in str(drift) and codemod.NAME in str(drift)
    return drift


def same_ast(a: str, b: str) -> bool:
    """Equal as Python (formatting, quotes and comments aside)."""
    return ast.dump(ast.parse(a)) == ast.dump(ast.parse(b))


def assert_formatting_insensitive(codemod: type[VaccCodemod], source: str, reformatted: str) -> None:
    """The same code formatted otherwise gives the same result up to formatting."""
    assert fixture(source) != fixture(reformatted), "the two inputs must differ in formatting"
    assert same_ast(fixture(source), fixture(reformatted)), "the two inputs must be the same code"
    assert same_ast(apply(codemod, source)[0], apply(codemod, reformatted)[0])
