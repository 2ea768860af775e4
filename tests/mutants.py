"""Semantic mutants of upstream ``modeling_gemma.py`` and their fate under the series.

patcher promises it never writes a wrong file: inside a unit that a codemod rewrites, every
upstream statement reaches the output (kept or translated) or stops the run with a drift
error (SPEC §5, "loses nothing").  This module is the yardstick of that promise.  It makes
small semantic changes ("mutants") to the units the codemods claim, as upstream might make
them in a future release, runs the series on each mutant and sorts the outcome:

* **refused** — ``DriftError``: the codemod met a shape it does not know and said so;
* **carried** — the output differs, as Python, from the output of the unmutated file: the
  change reached the vacc file;
* **dropped** — the output is the unmutated output, up to layout (blank lines, comments): a
  semantic change of upstream vanished without a word.  This is the failure the tier exists
  to catch;
* **error** — anything else (an internal error, a ``PatcherError``): a failure too.

Mutant kinds (``KINDS``), each made only inside a claimed unit:

* ``delete`` — one statement removed, at every nesting depth (``pass`` takes its place when
  it was the only statement of its block).  Docstrings, ``pass`` and ``...`` are left alone:
  removing them changes nothing;
* ``rebind-scale`` / ``rebind-tanh`` / ``rebind-shift`` — after an assignment ``x = ...``
  (``x`` a name or an attribute, or the first element of a tuple target; also ``x += ...``
  and ``x: T = ...``) a statement that changes ``x``: ``x = x * 1.5``, ``x = torch.tanh(x)``,
  ``x = x + 0.5``.  The three take turns, assignment by assignment, so every kind occurs;
* ``call-scale`` — ``f(...)`` becomes ``(f(...) * 1.5)``.  Not mutated: decorators and
  annotations, ``super()``, a call that is itself called (``f(a)(b)``), calls in assignment
  targets, a ``with`` item (a context manager), the exception of ``raise``, and a call whose
  result is thrown away (an expression statement: ``delete`` covers it);
* ``const`` — an ``int`` ``n`` becomes ``n + 1``, a ``float`` ``f`` becomes ``f * 1.5``
  (``0.0`` becomes ``0.5``).  Not in decorators, annotations and class bases.

Some mutants are equivalent: they change upstream's text but not what it computes (a
parameter default that every call overrides, such as ``eager_attention_forward``'s
``dropout=0.0`` once the call is inlined).  The tier waives none of them: a dropped
equivalent mutant is listed like any other, for a maintainer to judge.

Units are the qualified names in the codemods' ``TARGETS`` (``GemmaModel.forward``, a whole
class such as ``GemmaAttention``, ``eager_attention_forward``, ``GEMMA_ATTENTION_CLASSES``).
A unit inside another claimed unit (``GemmaPreTrainedModel._supports_sdpa``) is mutated as
part of the outer one.  Pseudo-targets (``<imports>``, ``Class.<bases>``) are skipped: they
name headers and import blocks, not statements with behaviour.  A unit absent from a file is
skipped too.  The unit statement itself is never deleted (a missing unit is the drift tests'
business, ``tests/test_drift.py``); the module-level assignment units (the attention class
mapping) get only expression mutants, since a statement added after them would lie outside
the unit.

Mutants are made fast: each file is parsed once with libcst (positions resolved once); a
mutant is one text edit of the upstream source at the positions libcst reports, applied on
demand by :meth:`Mutant.source`, which also checks that the result parses.  A mutant's id is
stable and readable: ``<version>:<unit>:<kind>:L<line>c<col>:<what>``.

Nothing here imports pytest: ``tests/test_mutation.py`` and ``benchmarks/bench_mutation.py``
share it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import random
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from patcher.errors import DriftError
from patcher.series import engine
from patcher.series.contract import MODELING
from patches import _shapes

KINDS = ("delete", "rebind-scale", "rebind-tanh", "rebind-shift", "call-scale", "const")
REBINDS = {
    "rebind-scale": "{x} = {x} * 1.5",
    "rebind-tanh": "{x} = torch.tanh({x})",
    "rebind-shift": "{x} = {x} + 0.5",
}
OUTCOMES = ("refused", "carried", "dropped-by-rule", "removed", "dropped", "error")
FAILURES = ("dropped", "error")


# -- mutants ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mutant:
    """One semantic change of one upstream file: replace ``upstream[start:end]`` by ``text``.

    ``unit`` is the claimed unit it lies in (``GemmaAttention``); ``member`` the innermost
    named scope around it (``GemmaAttention.forward``), which decides the codemods it is
    attributed to (``codemods``: those whose ``TARGETS`` name ``member`` or a scope around
    it).  ``key`` identifies the mutated unit's text, for spreading a sample over distinct
    code (see :func:`sample`).
    """

    version: str
    unit: str
    member: str
    kind: str
    line: int
    col: int
    what: str
    start: int
    end: int
    text: str
    codemods: tuple[str, ...]
    key: str
    top: tuple[int, int] = (0, 0)
    upstream: str = field(repr=False, compare=False, default="")

    @property
    def id(self) -> str:
        return f"{self.version}:{self.unit}:{self.kind}:L{self.line}c{self.col}:{self.what}"

    def source(self, check: bool = True) -> str:
        """The mutated file.  With ``check``, raises ``SyntaxError`` if it does not parse."""
        if check:
            self.check()
        return self.upstream[: self.start] + self.text + self.upstream[self.end :]

    def light(self) -> Mutant:
        """The same mutant without the upstream source it edits (for sending to a process
        that has the source, and for reports)."""
        return replace(self, upstream="")

    def check(self) -> None:
        """Parse the mutated top-level statement (``top`` is its span in upstream): the rest of
        the file is upstream's own and top-level statements parse on their own, so this says
        whether the whole mutant parses, at a fraction of the cost.  ``SyntaxError`` if not."""
        a, b = self.top
        ast.parse(self.upstream[a : self.start] + self.text + self.upstream[self.end : b])


@dataclass(frozen=True)
class Unit:
    """A claimed unit found in a file: its qualified name and its node."""

    qualname: str
    node: cst.CSTNode


def unit_names(series: Iterable[type]) -> list[str]:
    """The claimed qualified names of ``modeling_gemma.py``, pseudo-targets left out."""
    names: list[str] = []
    for codemod in series:
        if codemod.FILE != MODELING:
            continue
        for target in codemod.TARGETS:
            if all(part.isidentifier() for part in target.split(".")) and target not in names:
                names.append(target)
    return names


def claims(series: Iterable[type]) -> dict[str, tuple[str, ...]]:
    """Codemod name -> its identifier targets (the ones mutants are attributed by)."""
    return {
        c.NAME: tuple(t for t in c.TARGETS if all(p.isidentifier() for p in t.split(".")))
        for c in series
        if c.FILE == MODELING
    }


def _defined_name(stmt: cst.CSTNode) -> str | None:
    if isinstance(stmt, cst.ClassDef | cst.FunctionDef):
        return stmt.name.value
    if isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1:
        small = stmt.body[0]
        if isinstance(small, cst.Assign) and len(small.targets) == 1:
            target = small.targets[0].target
            return target.value if isinstance(target, cst.Name) else None
        if isinstance(small, cst.AnnAssign) and isinstance(small.target, cst.Name):
            return small.target.value
    return None


def find_units(module: cst.Module, names: Sequence[str]) -> list[Unit]:
    """The units ``names`` that exist in ``module``, outermost only, in file order."""
    found: dict[str, cst.CSTNode] = {}
    for name in names:
        body: Sequence[cst.CSTNode] = module.body
        node = None
        for part in name.split("."):
            node = next((stmt for stmt in body if _defined_name(stmt) == part), None)
            if node is None:
                break
            inner = node.body if isinstance(node, cst.ClassDef) else None
            body = inner.body if isinstance(inner, cst.IndentedBlock) else ()
        if node is not None:
            found[name] = node
    outer = [n for n in found if not any(n.startswith(other + ".") for other in found if other != n)]
    order = {id(stmt): i for i, stmt in enumerate(_all_statements(module))}
    return sorted((Unit(n, found[n]) for n in outer), key=lambda u: order.get(id(u.node), 0))


def _all_statements(module: cst.Module) -> list[cst.CSTNode]:
    out: list[cst.CSTNode] = []
    for stmt in module.body:
        out.append(stmt)
        if isinstance(stmt, cst.ClassDef) and isinstance(stmt.body, cst.IndentedBlock):
            out.extend(stmt.body.body)
    return out


def attribute(member: str, claimed: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """The codemods whose targets name ``member`` or a scope around it, in series order."""
    parts = member.split(".")
    return tuple(
        name
        for name, targets in claimed.items()
        if any(t.split(".") == parts[: len(t.split("."))] for t in targets)
    )


class _Lines:
    """Line/column (libcst positions: 1-based lines, 0-based columns) to string offsets."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.starts = [0] + [mt.end() for mt in re.finditer(r"\r\n|\r|\n", source)]

    def offset(self, line: int, col: int = 0) -> int:
        if line - 1 >= len(self.starts):
            return len(self.source)
        return self.starts[line - 1] + col

    def text(self, line: int) -> str:
        return self.source[self.offset(line) : self.offset(line + 1)]


def _short(text: str, width: int = 60) -> str:
    first = " ".join(text.strip().splitlines()[0].split()) if text.strip() else ""
    return first if len(first) <= width else first[: width - 3] + "..."


def _is_docstring(stmt: cst.CSTNode) -> bool:
    return (
        isinstance(stmt, cst.SimpleStatementLine)
        and len(stmt.body) == 1
        and isinstance(stmt.body[0], cst.Expr)
        and isinstance(stmt.body[0].value, cst.SimpleString | cst.ConcatenatedString)
    )


def _is_noop(small: cst.CSTNode) -> bool:
    return isinstance(small, cst.Pass) or (
        isinstance(small, cst.Expr) and isinstance(small.value, cst.Ellipsis)
    )


def _rebind_target(small: cst.CSTNode) -> cst.BaseExpression | None:
    """What an assignment binds, if it is a name or an attribute (first element of a tuple)."""
    if isinstance(small, cst.Assign):
        target = small.targets[0].target
    elif isinstance(small, cst.AugAssign) or (isinstance(small, cst.AnnAssign) and small.value is not None):
        target = small.target
    else:
        return None
    if isinstance(target, cst.Tuple | cst.List) and target.elements:
        first = target.elements[0]
        target = first.value if isinstance(first, cst.Element) else None
    return target if isinstance(target, cst.Name | cst.Attribute) else None


def _new_constant(node: cst.Integer | cst.Float) -> str | None:
    if isinstance(node, cst.Integer):
        return str(int(node.value.replace("_", ""), 0) + 1)
    value = float(node.value.replace("_", ""))
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return repr(value * 1.5) if value else "0.5"


class _Sites(cst.CSTVisitor):
    """Collects the mutation sites of one unit as (kind, node, start, end, text, what, member)."""

    def __init__(self, gen: _Generator, unit: Unit) -> None:
        super().__init__()
        self.gen, self.unit = gen, unit
        self.stack: list[cst.CSTNode] = []
        self.scope: list[str] = [unit.qualname]
        self.skip = 0  # inside a decorator or an annotation
        self.no_call: set[int] = set()  # calls that must not be scaled
        self.in_target = 0
        self.rebinds = 0

    # parent tracking
    def on_visit(self, node: cst.CSTNode) -> bool:
        self.stack.append(node)
        return super().on_visit(node)

    def on_leave(self, original_node: cst.CSTNode) -> None:
        super().on_leave(original_node)
        self.stack.pop()

    # scopes: a def or class inside the unit, and a class-level assignment
    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        if node is not self.unit.node:
            self.scope.append(node.name.value)

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        if original_node is not self.unit.node:
            self.scope.pop()

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        if node is not self.unit.node:
            self.scope.append(node.name.value)

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        if original_node is not self.unit.node:
            self.scope.pop()

    def visit_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> None:
        owner = self.stack[-3] if len(self.stack) >= 3 else None
        name = _defined_name(node) if isinstance(owner, cst.ClassDef) else None
        self.scope.append(name or "")

    def leave_SimpleStatementLine(self, original_node: cst.SimpleStatementLine) -> None:
        self.scope.pop()

    @property
    def member(self) -> str:
        return ".".join(part for part in self.scope if part)

    # contexts that are not mutated
    def visit_Decorator(self, node: cst.Decorator) -> None:
        self.skip += 1

    def leave_Decorator(self, original_node: cst.Decorator) -> None:
        self.skip -= 1

    def visit_Annotation(self, node: cst.Annotation) -> None:
        self.skip += 1

    def leave_Annotation(self, original_node: cst.Annotation) -> None:
        self.skip -= 1

    def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
        self.in_target += 1

    def leave_AssignTarget(self, original_node: cst.AssignTarget) -> None:
        self.in_target -= 1

    def visit_ClassDef_bases(self, node: cst.ClassDef) -> None:
        self.skip += 1  # Class.<bases> is a pseudo-target of its own

    def leave_ClassDef_bases(self, node: cst.ClassDef) -> None:
        self.skip -= 1

    def visit_ClassDef_keywords(self, node: cst.ClassDef) -> None:
        self.skip += 1

    def leave_ClassDef_keywords(self, node: cst.ClassDef) -> None:
        self.skip -= 1

    def visit_Expr(self, node: cst.Expr) -> None:
        self.no_call.add(id(node.value))

    def visit_WithItem(self, node: cst.WithItem) -> None:
        self.no_call.add(id(node.item))

    def visit_Raise(self, node: cst.Raise) -> None:
        if node.exc is not None:
            self.no_call.add(id(node.exc))

    # statements
    def visit_IndentedBlock(self, node: cst.IndentedBlock) -> None:
        owner = self.stack[-2] if len(self.stack) >= 2 else None
        body = list(node.body)
        for i, stmt in enumerate(body):
            if i == 0 and isinstance(owner, cst.FunctionDef | cst.ClassDef) and _is_docstring(stmt):
                continue
            if isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) > 1:
                for small in stmt.body:
                    self._delete_small(small)
                continue
            if isinstance(stmt, cst.SimpleStatementLine) and _is_noop(stmt.body[0]):
                continue
            name = _defined_name(stmt) if isinstance(owner, cst.ClassDef) else None
            member = f"{self.member}.{name}" if name else self.member  # a method or class attribute
            self.gen.delete_statement(self, stmt, only=len(body) == 1, member=member)

    def visit_SimpleStatementSuite(self, node: cst.SimpleStatementSuite) -> None:
        for small in node.body:
            self._delete_small(small)

    def _delete_small(self, small: cst.CSTNode) -> None:
        if not _is_noop(small):
            self.gen.replace(self, "delete", small, "pass", None)

    def _rebind(self, node: cst.CSTNode) -> None:
        if self.skip or node is self.unit.node:
            return
        line = self.stack[-2] if len(self.stack) >= 2 else None
        if not isinstance(line, cst.SimpleStatementLine | cst.SimpleStatementSuite):
            return
        if isinstance(line, cst.SimpleStatementLine) and line is self.unit.node:
            return  # a module-level assignment unit: a statement after it is outside the unit
        target = _rebind_target(node)
        if target is None:
            return
        kind = ("rebind-scale", "rebind-tanh", "rebind-shift")[self.rebinds % 3]
        self.rebinds += 1
        self.gen.insert_after(self, kind, line, node, REBINDS[kind].format(x=self.gen.code(target)))

    def visit_Assign(self, node: cst.Assign) -> None:
        self._rebind(node)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self._rebind(node)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self._rebind(node)

    # expressions
    def visit_Call(self, node: cst.Call) -> None:
        if isinstance(node.func, cst.Call):
            self.no_call.add(id(node.func))
        if self.skip or self.in_target or id(node) in self.no_call:
            return
        if isinstance(node.func, cst.Name) and node.func.value == "super":
            return
        func = _short(self.gen.code(node.func), 40)
        self.gen.wrap(self, node, "({} * 1.5)", f"{func}(...)*1.5")

    def visit_Integer(self, node: cst.Integer) -> None:
        self._constant(node)

    def visit_Float(self, node: cst.Float) -> None:
        self._constant(node)

    def _constant(self, node: cst.Integer | cst.Float) -> None:
        if self.skip:
            return
        new = _new_constant(node)
        if new is not None:
            self.gen.replace(self, "const", node, new, f"{node.value}->{new}")


class _Generator:
    """Turns the sites of one file's units into :class:`Mutant` objects (text edits)."""

    def __init__(self, version: str, source: str, series: Sequence[type]) -> None:
        self.version, self.source = version, source
        self.module = cst.parse_module(source)
        self.positions = MetadataWrapper(self.module, unsafe_skip_copy=True).resolve(PositionProvider)
        self.lines = _Lines(source)
        self.claimed = claims(series)
        self.units = find_units(self.module, unit_names(series))
        self.mutants: list[Mutant] = []
        self.span: tuple[int, int] = (0, 0)  # lines of the unit being mutated
        self.top: tuple[int, int] = (0, 0)  # offsets of its top-level statement

    def code(self, node: cst.CSTNode) -> str:
        return self.module.code_for_node(node)

    def run(self) -> list[Mutant]:
        for unit in self.units:
            top = next(
                stmt for stmt in self.module.body if _defined_name(stmt) == unit.qualname.split(".")[0]
            )
            self.top = (
                self.lines.offset(self._first_line(top)),
                self.lines.offset(self.positions[top].end.line + 1),
            )
            self.span = (self._first_line(unit.node), self.positions[unit.node].end.line)
            sites = _Sites(self, unit)
            unit.node.visit(sites)
        seen: dict[str, int] = {}
        out = []
        for mutant in self.mutants:  # ids are unique: a repeated one (never seen so far) gets #n
            n = seen[mutant.id] = seen.get(mutant.id, 0) + 1
            out.append(mutant if n == 1 else _renamed(mutant, f"{mutant.what}#{n}"))
        return out

    def _first_line(self, node: cst.CSTNode) -> int:
        decorators = getattr(node, "decorators", ())
        return self.positions[decorators[0] if decorators else node].start.line

    def _add(
        self,
        sites: _Sites,
        kind: str,
        node: cst.CSTNode,
        start: int,
        end: int,
        text: str,
        what: str,
        member: str | None = None,
    ) -> None:
        member = sites.member if member is None else member
        pos = self.positions[node].start
        unit_start, unit_end = self.lines.offset(self.span[0]), self.lines.offset(self.span[1] + 1)
        mutated_unit = self.source[unit_start:start] + text + self.source[end:unit_end]
        key = hashlib.sha1(f"{sites.unit.qualname}\0{mutated_unit}".encode()).hexdigest()[:16]
        self.mutants.append(
            Mutant(
                self.version,
                sites.unit.qualname,
                member,
                kind,
                pos.line,
                pos.column,
                what,
                start,
                end,
                text,
                attribute(member, self.claimed),
                key,
                self.top,
                self.source,
            )
        )

    def _span(self, node: cst.CSTNode) -> tuple[int, int]:
        r = self.positions[node]
        return self.lines.offset(r.start.line, r.start.column), self.lines.offset(r.end.line, r.end.column)

    def delete_statement(self, sites: _Sites, stmt: cst.CSTNode, only: bool, member: str) -> None:
        first, last = self._first_line(stmt), self.positions[stmt].end.line
        start, end = self.lines.offset(first), self.lines.offset(last + 1)
        indent = self.source[start : self.lines.offset(first, self.positions[stmt].start.column)]
        if not indent.isspace() and indent:
            return  # a statement sharing its first line: never produced by libcst positions
        text = f"{indent}pass\n" if only else ""
        self._add(sites, "delete", stmt, start, end, text, _short(self.lines.text(first)), member)

    def replace(self, sites: _Sites, kind: str, node: cst.CSTNode, text: str, what: str | None) -> None:
        start, end = self._span(node)
        self._add(
            sites, kind, node, start, end, text, _short(self.source[start:end]) if what is None else what
        )

    def wrap(self, sites: _Sites, node: cst.CSTNode, template: str, what: str) -> None:
        start, end = self._span(node)
        self._add(sites, "call-scale", node, start, end, template.format(self.source[start:end]), what)

    def insert_after(self, sites: _Sites, kind: str, line: cst.CSTNode, small: cst.CSTNode, stmt: str):
        if isinstance(line, cst.SimpleStatementLine) and len(line.body) == 1:
            last = self.positions[line].end.line
            at = self.lines.offset(last + 1)
            indent = self.lines.text(self.positions[line].start.line)
            indent = indent[: len(indent) - len(indent.lstrip())]
            self._add(sites, kind, small, at, at, f"{indent}{stmt}\n", stmt)
        else:  # among `a; b` or in a one-line suite: `; stmt` right after the assignment
            _, end = self._span(small)
            self._add(sites, kind, small, end, end, f"; {stmt}", stmt)


def _renamed(mutant: Mutant, what: str) -> Mutant:
    return replace(mutant, what=what)


def generate(version: str, source: str, series: Sequence[type] | None = None) -> list[Mutant]:
    """Every mutant of the claimed units of one upstream ``modeling_gemma.py``, in file order.

    ``version`` only names the file in the ids; ``series`` defaults to ``patches/series``.
    """
    series = engine.load_series() if series is None else series
    return _Generator(version, source, series).run()


def count_by_kind(mutants: Iterable[Mutant]) -> dict[str, int]:
    counts = dict.fromkeys(KINDS, 0)
    for mutant in mutants:
        counts[mutant.kind] += 1
    return counts


# -- sampling --------------------------------------------------------------------------------
def sample(mutants: Sequence[Mutant], n: int, seed: int = 0, exclude_keys: set[str] | None = None):
    """``n`` mutants drawn with a fixed seed, the kinds taking turns so that every kind occurs.

    ``exclude_keys`` (updated in place) spreads samples of several files over distinct code:
    a mutant whose mutated unit text was already drawn from another file is passed over.
    This only chooses *which* mutants a sample checks; it never stands in for a result, so the
    full tier still runs every mutant of every file.
    """
    rng = random.Random(f"{seed}:{mutants[0].version if mutants else ''}")
    pools: dict[str, list[Mutant]] = {kind: [] for kind in KINDS}
    for mutant in mutants:
        if exclude_keys is None or mutant.key not in exclude_keys:
            pools[mutant.kind].append(mutant)
    for pool in pools.values():
        rng.shuffle(pool)
    chosen: list[Mutant] = []
    while len(chosen) < n and any(pools.values()):
        for kind in KINDS:
            if pools[kind] and len(chosen) < n:
                chosen.append(pools[kind].pop())
    if exclude_keys is not None:
        exclude_keys.update(m.key for m in chosen)
    return sorted(chosen, key=lambda m: (m.start, m.kind, m.id))


# -- classification --------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """What the series made of one mutant: ``status`` is one of ``OUTCOMES``; ``refused_by``
    the codemods a drift error named; ``detail`` the first line of an error."""

    mutant: Mutant
    status: str
    refused_by: tuple[str, ...] = ()
    detail: str = ""
    seconds: float = 0.0  # wall time of the series run
    cpu: float = 0.0  # CPU time of this process during it

    def light(self) -> Outcome:
        """The same outcome without the upstream source (cheap to send between processes)."""
        return replace(self, mutant=self.mutant.light())


_DRIFT = re.compile(r"^drift: codemod ([\w-]+), target", re.MULTILINE)


def refusing_codemods(message: str) -> tuple[str, ...]:
    """The codemods a drift message names (lines ``drift: codemod <name>, target ...``)."""
    return tuple(dict.fromkeys(_DRIFT.findall(message)))


#: The family traits the series runs with (None: the canonical family's, Gemma's).  The
#: Mistral tier sets Mistral's and feeds Mistral's files in the codemods' (canonical) names.
TRAITS = None


def output(source: str, series: Sequence[type]) -> str:
    """The series' output for ``source`` (no notice: mutant and original differ only in code)."""
    return engine.run(source, list(series), file=MODELING, traits=TRAITS).code


@functools.lru_cache(maxsize=8)
def _code_of(output: str) -> str:
    return ast.dump(ast.parse(output))


def _compare(code: str, baseline: str) -> str:
    """``carried`` when ``code`` differs from ``baseline`` as Python, else ``dropped``.  Layout
    does not count: a mutant whose only trace is a blank line or a comment (a deleted method
    leaves its blank lines behind, around a unit a template replaces) was dropped."""
    if code == baseline:
        return "dropped"
    return "dropped" if ast.dump(ast.parse(code)) == _code_of(baseline) else "carried"


_DROP_COMMENT = re.compile(r"^\s*# vacc: (dropped|done above) \(([\w-]+)\): ")


def _accounted(mutant: Mutant, code: str, baseline: str, series: Sequence[type]) -> tuple[str, str] | None:
    """Two ways a mutant can leave the output's code as it was and still be accounted for:

    * ``removed``: it lies in a unit that a codemod's ``DROPS`` removes whole by a rule of the
      contract (the attention variants, the static-cache hooks, ``_update_causal_mask``);
    * ``dropped-by-rule``: it deletes a statement that named rules drop (or translate into
      nothing, done above), and the output lost exactly their ``# vacc: dropped (<rule>): …``
      / ``# vacc: done above (<rule>): …`` comment lines and nothing else (one line per such
      statement: a deleted ``if`` that a rule did above loses its own line and those of the
      statements inside it that rules dropped).

    Both are reported apart from ``carried``; anything else stays ``dropped``."""
    drops = {unit: why for codemod in series for unit, why in getattr(codemod, "DROPS", {}).items()}
    scopes = [mutant.member.split(".")[: i + 1] for i in range(len(mutant.member.split(".")))]
    for scope in scopes:
        why = drops.get(".".join(scope))
        if why:
            return "removed", why
    if mutant.kind != "delete":
        return None
    lost = [line for line in _line_diff(baseline, code, "-") if line.strip()]
    gained = [line for line in _line_diff(baseline, code, "+") if line.strip()]
    hits = [_DROP_COMMENT.match(line) for line in lost]
    if lost and not gained and all(hits):
        rules = ", ".join(dict.fromkeys(hit.group(2) for hit in hits))
        return "dropped-by-rule", f"rule {rules}: {lost[0].strip()}"
    return None


def _line_diff(a: str, b: str, side: str) -> list[str]:
    import difflib

    return [
        line[1:]
        for line in difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=0)
        if line.startswith(side) and not line.startswith(side * 3)
    ]


def classify(
    mutant: Mutant, series: Sequence[type], baseline: str | Exception, spliced: Spliced | None = None
) -> Outcome:
    """Run the series on the mutant in process and compare with ``baseline``, the output of
    the unmutated file (as code: see ``_compare``).  With ``spliced`` (made from the mutant's
    upstream), the mutated file is not parsed whole (see :class:`Spliced`)."""
    if isinstance(baseline, Exception):
        first = (str(baseline).splitlines() or [""])[0]
        return Outcome(
            mutant, "error", detail=f"the unmutated file fails: {type(baseline).__name__}: {first}"
        )
    try:
        source = mutant.source()
    except SyntaxError as exc:
        return Outcome(mutant, "error", detail=f"mutant does not parse: {exc}")
    start, cpu = time.perf_counter(), time.process_time()
    try:
        module = spliced.module(mutant) if spliced is not None else None
        code = output(source, series) if module is None else _fold(module, series)
    except DriftError as exc:
        status, refused, detail = "refused", refusing_codemods(str(exc)), str(exc).splitlines()[0]
    except Exception as exc:  # every other failure is an "error" outcome
        first = (str(exc).splitlines() or [""])[0]
        status, refused, detail = "error", (), f"{type(exc).__name__}: {first}"
    else:
        status, refused, detail = _compare(code, baseline), (), ""
        if status == "dropped" and code != baseline:
            detail = "the output differs only in layout"
        if status == "dropped":
            status, detail = _accounted(mutant, code, baseline, series) or (status, detail)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return Outcome(mutant, status, refused, detail, seconds, cpu)


class Spliced:
    """The fast way to run the series on many mutants of one file, with the same outcome.

    A mutant edits one top-level statement, and top-level statements parse on their own
    (libcst gives a statement parsed alone the same tree as in the whole file, with the
    file's parsing config; ``tests/test_mutation.py`` checks it on every distinct upstream).
    So the file is parsed once; a mutant's module is the parsed file with that one statement
    parsed again from the mutated text and put in its place, and its other statements are
    the very nodes of the parsed file, whose renders (``patches._shapes.code``) are made once
    and reused from mutant to mutant.  ``module`` checks that the spliced module renders to
    exactly the mutant's source; ``classify`` folds the series over it as ``engine.run``
    does.  About twice as fast as parsing every mutant (the mutation tier's full run is
    tens of thousands of series runs)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.parsed = cst.parse_module(source)
        self.config = self.parsed.config_for_parsing
        offset = len("".join(self.parsed.code_for_node(line) for line in self.parsed.header))
        self.spans: list[tuple[int, int]] = []
        for stmt in self.parsed.body:
            length = len(self.parsed.code_for_node(stmt))
            self.spans.append((offset, offset + length))
            offset += length

    def module(self, mutant: Mutant) -> cst.Module | None:
        """The parsed file with the mutated statement in place; None when the mutant lies
        outside one statement (the caller then parses the whole mutated file)."""
        i = next((i for i, (a, b) in enumerate(self.spans) if a <= mutant.top[0] < b), None)
        if i is None:
            return None
        a, b = self.spans[i]
        if not a <= mutant.start <= mutant.end <= b:
            return None
        text = self.source[a : mutant.start] + mutant.text + self.source[mutant.end : b]
        try:
            stmt = cst.parse_statement(text, config=self.config)
        except cst.ParserSyntaxError:
            return None
        body = list(self.parsed.body)
        body[i] = stmt
        module = self.parsed.with_changes(body=body)
        if _shapes.module_code(module) != mutant.source(check=False):
            return None  # never seen; the whole file is parsed then
        return module


def _fold(module: cst.Module, series: Sequence[type]) -> str:
    """``engine.run`` on a parsed module: the output's code, or ``DriftError`` naming every
    drifting codemod (one ``drift: codemod <name>, target <t>: <found>`` line each)."""
    done = engine.fold(module, list(series), file=MODELING, traits=TRAITS)
    if done.drifts:
        raise DriftError(
            "\n".join(f"drift: codemod {d.codemod}, target {d.target}: {d.found}" for d in done.drifts)
        )
    return _shapes.module_code(done.module)


def baseline(source: str, series: Sequence[type]) -> str | Exception:
    """The output of the unmutated file, or the exception the series raised on it (then every
    mutant of the file is an ``error``: nothing can be said about them)."""
    try:
        return output(source, series)
    except Exception as exc:  # reported per mutant by classify
        return exc


def classify_all(
    mutants: Sequence[Mutant], series: Sequence[type], baselines: dict[str, str | Exception] | None = None
) -> list[Outcome]:
    """Classify ``mutants`` (of any files); each file's baseline output is computed once."""
    baselines = {} if baselines is None else baselines
    splices: dict[str, Spliced] = {}
    outcomes = []
    for mutant in mutants:
        if mutant.version not in baselines:
            baselines[mutant.version] = baseline(mutant.upstream, series)
        if mutant.version not in splices:
            splices[mutant.version] = Spliced(mutant.upstream)
        outcomes.append(classify(mutant, series, baselines[mutant.version], splices[mutant.version]))
    return outcomes


# -- reporting -------------------------------------------------------------------------------
def tally(outcomes: Iterable[Outcome], by: str = "codemod") -> dict[str, dict[str, int]]:
    """Counts of each outcome per codemod (a mutant counts for every codemod it is attributed
    to), per file (``by="version"``), per unit or per kind."""
    table: dict[str, dict[str, int]] = {}
    for o in outcomes:
        if by == "codemod":
            keys = o.mutant.codemods or ("(unattributed)",)
        else:
            keys = (getattr(o.mutant, by),)
        for key in keys:
            row = table.setdefault(key, dict.fromkeys(OUTCOMES, 0))
            row[o.status] += 1
    return table


def failure_message(outcomes: Sequence[Outcome], limit: int = 20) -> str:
    """The assertion message of the tier: failures counted per codemod and listed by id."""
    lines = []
    total = len(outcomes)
    for status in FAILURES:
        bad = [o for o in outcomes if o.status == status]
        if not bad:
            continue
        per = tally(bad)
        lines.append(
            f"{len(bad)} of {total} mutants {status}; per codemod: "
            + ", ".join(
                f"{name} {row[status]}" for name, row in sorted(per.items(), key=lambda kv: -kv[1][status])
            )
        )
        for o in bad[:limit]:
            lines.append(f"  {o.mutant.id}" + (f"  [{o.detail}]" if o.detail else ""))
        if len(bad) > limit:
            lines.append(f"  ... and {len(bad) - limit} more")
    return "\n".join(lines)
