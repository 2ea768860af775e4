"""Which upstream code the series may touch, and proof that it touched nothing else.

Every codemod declares ``TARGETS``: qualified names (``GemmaAttention``,
``GemmaModel.forward``) or pseudo-targets in angle brackets for module-level code without a
name (``<imports>``, ``<header>``); ``Class.<bases>`` claims a class's header.
``unclaimed_changes`` compares upstream and output unit by unit — module-level statements,
and the members of classes only partly claimed — and lists every unit no target claims that
is not byte-identical in the output.
"""

from __future__ import annotations

from collections.abc import Iterable

import libcst as cst

from patcher.series.stack import roomy
from patches import _shapes as s
from patches._base import VaccCodemod


def claimed_names(series: Iterable[type[VaccCodemod]]) -> set[str]:
    return {target for codemod in series for target in codemod.TARGETS}


def _claimed(qualname: str, claims: set[str]) -> bool:
    """Claimed itself or inside a claimed unit (``GemmaAttention`` claims its methods)."""
    parts = qualname.split(".")
    return any(".".join(parts[:i]) in claims for i in range(1, len(parts) + 1))


def _partly_claimed(qualname: str, claims: set[str]) -> bool:
    return any(c.startswith(qualname + ".") for c in claims)


def _is_import_level(stmt: cst.CSTNode) -> bool:
    """Module-level imports, and ``if``/``try`` blocks of imports, belong to ``<imports>``."""
    if isinstance(stmt, cst.SimpleStatementLine):
        return all(isinstance(x, cst.Import | cst.ImportFrom) for x in stmt.body)
    if isinstance(stmt, cst.If | cst.Try):
        return True  # module-level guards (flash-attn, fx, TYPE_CHECKING …) hold imports
    return False


def _is_pass(stmt: cst.CSTNode) -> bool:
    return isinstance(stmt, cst.SimpleStatementLine) and all(isinstance(x, cst.Pass) for x in stmt.body)


def unclaimed_changes(upstream: str, output: str, series: Iterable[type[VaccCodemod]]) -> list[str]:
    """Unclaimed upstream units that are missing or differ in ``output`` (empty: all kept)."""
    return roomy(_unclaimed, upstream, output, claimed_names(series))  # see patcher.series.stack


def _unclaimed(upstream: str, output: str, claims: set[str]) -> list[str]:
    before, after = cst.parse_module(upstream), cst.parse_module(output)
    problems: list[str] = []
    _compare_body(before, after, list(before.body), list(after.body), "", claims, problems)
    return problems


def _compare_body(
    before: cst.Module,
    after: cst.Module,
    old: list,
    new: list,
    prefix: str,
    claims: set[str],
    problems: list[str],
) -> None:
    new_named = {s.stmt_name(x): x for x in new if s.stmt_name(x)}
    new_unnamed = [before_code for before_code in (after.code_for_node(x) for x in new if not s.stmt_name(x))]
    for stmt in old:
        name = s.stmt_name(stmt)
        if name is None:
            if not prefix and "<imports>" in claims and _is_import_level(stmt):
                continue
            if prefix and _is_pass(stmt):
                continue  # a class body's bare `pass` has no behaviour: it goes when members arrive
            code = before.code_for_node(stmt)
            if code in new_unnamed:
                new_unnamed.remove(code)
            else:
                problems.append(
                    f"{prefix or '<module>'}: statement changed or missing: {code.strip().splitlines()[0]}"
                )
            continue
        qualname = prefix + name
        if _claimed(qualname, claims):
            continue
        if name not in new_named:
            problems.append(f"{qualname}: missing from the output")
            continue
        counterpart = new_named[name]
        if _partly_claimed(qualname, claims) and isinstance(stmt, cst.ClassDef):
            head_old = before.code_for_node(stmt.with_changes(body=cst.IndentedBlock([])))
            head_new = after.code_for_node(counterpart.with_changes(body=cst.IndentedBlock([])))
            if head_old != head_new and f"{qualname}.<bases>" not in claims:
                problems.append(f"{qualname}: class header differs")
            _compare_body(
                before,
                after,
                list(stmt.body.body),
                list(counterpart.body.body),
                qualname + ".",
                claims,
                problems,
            )
        elif before.code_for_node(stmt) != after.code_for_node(counterpart):
            problems.append(f"{qualname}: differs from upstream")
