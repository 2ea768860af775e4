"""Statement accounting: every upstream statement of a rewritten unit is kept, translated or
dropped by a named rule, and anything else is drift.

A codemod that rewrites a unit (a forward, a method) does not replace it with a template.
It walks upstream's statements in order and gives each one to the first :class:`Rule` that
recognises it:

* **keep** — the statement stays where upstream has it, in upstream's words;
* **translate** — the statement is replaced by what the vacc form needs in its place (the
  rotary call with ``seq_len``, the tuple-cache update, ...), built from the statement itself
  so that what it computes is carried over;
* **drop** — the statement has no place in the vacc form (a static-cache hook, a dispatch to
  another attention backend, ...).  Its place in the output gets a one-line comment naming
  the rule, so that a reviewer sees what went and why, and an upstream change that removes
  the statement still changes the output.

Rules that translate or drop recognise their statement **strictly** (same code as a known
form, whatever the formatting): a statement that resembles one but differs is not silently
absorbed, it is drift.  The fallback keeps a statement only when it mentions none of the
unit's *plumbing* names (the cache, ``cache_position``, ``**kwargs``, ...: what the vacc form
takes away); a compound statement whose header is free of them is kept and its block
accounted statement by statement.  A statement that no rule matches is drift, reported at
its upstream ``file:line`` with its first line.  Finally :func:`unresolved` catches a kept
statement using a name the rewritten unit no longer defines.
"""

from __future__ import annotations

import ast
import builtins
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import libcst as cst
import libcst.matchers as m

from patches import _layout as lay
from patches import _shapes as s

KEEP, TRANSLATE, DROP = "keep", "translate", "drop"
Translation = Callable[[cst.BaseStatement], Sequence[cst.BaseStatement]]


@dataclass(frozen=True)
class Rule:
    """One named way of accounting for an upstream statement.

    ``match`` says whether the rule applies to a statement; ``apply`` (for ``translate``)
    returns the statements that take its place.  ``why`` is the reason the codemod's
    docstring gives for it."""

    name: str
    action: str
    why: str
    match: Callable[[cst.BaseStatement], bool]
    apply: Translation | None = None
    #: For a translation that replaces a compound statement whole: the first lines of the
    #: statements inside it that it drops (a warning, say).  Each gets its own ``# vacc:
    #: dropped (<rule>): ...`` comment, so that an upstream change removing one of them still
    #: changes the output.
    notes: Callable[[cst.BaseStatement], Sequence[str]] | None = None


def known(*sources: str) -> Callable[[cst.BaseStatement], bool]:
    """A matcher for statements that are, as Python, one of ``sources`` (formatting,
    quotes and comments aside): the strict recognition translate and drop rules use."""
    wanted = {_dump(textwrap.dedent(src).strip()) for src in sources}
    return lambda stmt: _dump_of(stmt) in wanted


def padding_mask_warning() -> Callable[[cst.BaseStatement], bool]:
    """The deprecation warning about a ``padding_mask`` entry of ``**kwargs`` (Llama 4.36 era):
    the ``padding-mask-warning`` drop of the attention and decoder-layer forwards, whose vacc
    forms take no ``**kwargs``."""
    return known(
        """
        if "padding_mask" in kwargs:
            warnings.warn(
                "Passing `padding_mask` is deprecated and will be removed in v4.37. Please make sure use `attention_mask` instead.`"
            )
        """
    )


#: id(node) -> (node, dump): every rule asks about the same statements, render each once.
_DUMPS: dict[int, tuple[cst.CSTNode, str]] = {}


def _dump_of(node: cst.CSTNode) -> str:
    hit = _DUMPS.get(id(node))
    if hit is not None and hit[0] is node:
        return hit[1]
    if len(_DUMPS) > 4096:
        _DUMPS.clear()
    dump = _dump(textwrap.dedent(s.render(node)).strip())
    _DUMPS[id(node)] = (node, dump)
    return dump


def _dump(source: str) -> str:
    # An expression lifted out of brackets may span lines without them
    # (``x\n    if c\n    else None``): parenthesised, it parses to the same tree.
    for text in (source, f"(\n{source}\n)"):
        try:
            return ast.dump(ast.parse(text))
        except SyntaxError:
            pass
    return source


def first_line(stmt: cst.CSTNode) -> str:
    """The first line of a statement (its leading comments aside), for messages and drop comments."""
    if hasattr(stmt, "leading_lines"):
        stmt = stmt.with_changes(leading_lines=())
    text = textwrap.dedent(s.render(stmt)).strip()
    lines = text.splitlines() or [""]
    return lines[0] + (" …" if len(lines) > 1 else "")


def one_line(node: cst.CSTNode) -> str:
    """``node`` as source on one line (re-spelled by ``ast`` when upstream wraps it), for comments."""
    text = textwrap.dedent(s.render(node)).strip()
    if "\n" not in text:
        return text
    try:
        return ast.unparse(ast.parse(f"(\n{text}\n)", mode="eval"))
    except SyntaxError:
        return " ".join(text.split())


class _Variables(cst.CSTVisitor):
    """Variable names used in a subtree: not attribute names (``outputs.cache``), not keywords."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        node.value.visit(self)
        return False

    def visit_Arg(self, node: cst.Arg) -> bool:
        node.value.visit(self)
        return False

    def visit_Name(self, node: cst.Name) -> None:
        self.names.add(node.value)


def variables(node: cst.CSTNode) -> set[str]:
    """The variable names ``node`` uses (attribute names and call keywords excluded)."""
    visitor = _Variables()
    node.visit(visitor)
    return visitor.names


def header_names(stmt: cst.CSTNode) -> set[str]:
    """The variables a compound statement's header uses (``if`` test, ``for`` target and
    iterable, ``with`` items); for a simple statement, every variable it uses."""
    if isinstance(stmt, cst.If | cst.While):
        return variables(stmt.test)
    if isinstance(stmt, cst.For):
        return variables(stmt.target) | variables(stmt.iter)
    if isinstance(stmt, cst.With):
        return set().union(*(variables(item) for item in stmt.items))
    if isinstance(stmt, cst.Try):
        return set().union(set(), *(variables(h.type) for h in stmt.handlers if h.type))
    if isinstance(stmt, cst.FunctionDef | cst.ClassDef):
        return {stmt.name.value}
    return variables(stmt)


@dataclass
class Accountant:
    """Accounts for the statements of one unit with ``rules``, then the fallback.

    ``plumbing`` names what the vacc form takes away: a statement mentioning one is kept only
    by an explicit rule.  ``ledger`` records ``(rule, action, first line)`` per statement."""

    codemod: object  # the VaccCodemod, for its drift()
    unit: str
    rules: Sequence[Rule]
    plumbing: frozenset[str] = frozenset()
    ledger: list[tuple[str, str, str]] = field(default_factory=list)

    def block(self, stmts: Iterable[cst.BaseStatement]) -> list[cst.BaseStatement]:
        """The accounted statements of a block (dropped ones leave a comment on the next)."""
        out: list[cst.BaseStatement] = []
        pending: list[cst.EmptyLine] = []
        for stmt in stmts:
            rule = self._rule(stmt)
            self.ledger.append((rule.name, rule.action, first_line(stmt)))
            if rule.action == DROP:
                pending += [*stmt.leading_lines, _comment(f"vacc: dropped ({rule.name}): {first_line(stmt)}")]
                continue
            if rule.action == KEEP and rule.apply is None:
                new = [stmt]
            else:  # a translation keeps the blank lines and comments of the statement it replaces
                assert rule.apply is not None, rule.name
                new = list(rule.apply(stmt.with_changes(leading_lines=())))
                notes = [dropped_comment(rule.name, n) for n in (rule.notes or _none)(stmt)]
                if not new:  # translated into nothing (already done above): it stands as a drop
                    pending += [
                        *stmt.leading_lines,
                        _comment(f"vacc: done above ({rule.name}): {first_line(stmt)}"),
                        *notes,
                    ]
                    continue
                new[0] = new[0].with_changes(
                    leading_lines=[*stmt.leading_lines, *notes, *new[0].leading_lines]
                )
            if pending and new:  # comments of dropped statements stand where those statements stood
                new[0] = new[0].with_changes(leading_lines=[*pending, *new[0].leading_lines])
                pending = []
            out += new
        if pending:  # dropped at the end of the block: the comments stand on a `pass`-free line
            out.append(_trailing(pending))
        return out

    def indented(self, block: cst.BaseSuite) -> cst.BaseSuite:
        """An indented block with its statements accounted (an emptied block gets ``pass``)."""
        body = self.block(block.body)  # type: ignore[attr-defined]
        return block.with_changes(body=body or [cst.SimpleStatementLine([cst.Pass()])])

    def _rule(self, stmt: cst.BaseStatement) -> Rule:
        for rule in self.rules:
            if rule.match(stmt):
                return rule
        touched = sorted(header_names(stmt) & self.plumbing)
        if not touched:
            if _has_blocks(stmt):
                return Rule("unchanged-code", KEEP, "no plumbing in the header", _yes, self._descend)
            return Rule("unchanged-code", KEEP, "no plumbing", _yes)
        raise self.codemod.drift(  # type: ignore[attr-defined]
            self.unit,
            f"no rule accounts for `{first_line(stmt)}` (it uses {', '.join(touched)}, "
            "which the vacc form takes away)",
            node=stmt,
        )

    def _descend(self, stmt: cst.BaseStatement) -> list[cst.BaseStatement]:
        changes = {}
        for attr in ("body", "orelse", "finalbody"):
            part = getattr(stmt, attr, None)
            if isinstance(part, cst.IndentedBlock):
                changes[attr] = self.indented(part)
            elif isinstance(part, cst.Else | cst.Finally):
                changes[attr] = part.with_changes(body=self.indented(part.body))
            elif isinstance(part, cst.If):  # elif
                changes[attr] = self._descend(part)[0]
        if isinstance(stmt, cst.Try):
            changes["handlers"] = [h.with_changes(body=self.indented(h.body)) for h in stmt.handlers]
        return [stmt.with_changes(**changes)]


def _yes(_stmt: cst.BaseStatement) -> bool:
    return True


def _none(_stmt: cst.BaseStatement) -> Sequence[str]:
    return ()


def _has_blocks(stmt: cst.BaseStatement) -> bool:
    return isinstance(stmt, cst.If | cst.For | cst.While | cst.With | cst.Try)


class _Warnings(cst.CSTVisitor):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def visit_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> bool:
        if len(node.body) == 1 and is_warning(node.body[0]):
            self.found.append(first_line(node))
        return False


def is_warning(small: cst.CSTNode) -> bool:
    """``logger.warning_once(<strings>)``: a log line only."""
    return (
        isinstance(small, cst.Expr)
        and isinstance(small.value, cst.Call)
        and s.dotted(small.value.func) == "logger.warning_once"
        and all(isinstance(a.value, cst.BaseString) and a.keyword is None for a in small.value.args)
    )


def warnings_in(stmt: cst.CSTNode) -> list[str]:
    """The first lines of the log-only statements inside ``stmt``, at any depth."""
    visitor = _Warnings()
    stmt.visit(visitor)
    return visitor.found


def dropped_comment(rule: str, text: str) -> cst.EmptyLine:
    """``# vacc: dropped (<rule>): <text>``, the line a dropped statement leaves."""
    return _comment(f"vacc: dropped ({rule}): {text}")


def _comment(text: str) -> cst.EmptyLine:
    return cst.EmptyLine(comment=cst.Comment("# " + text.replace("\n", " ")))


def _trailing(comments: list[cst.EmptyLine]) -> cst.BaseStatement:
    """Comments of statements dropped at the end of a block lead a ``pass`` (a block's footer
    belongs to the caller, and an emptied block needs a statement anyway)."""
    return cst.SimpleStatementLine([cst.Pass()], leading_lines=comments)


# -- signatures ----------------------------------------------------------------------------------
def check_params(
    codemod: object, unit: str, fn: cst.FunctionDef, allowed: dict[str, set[str | None]]
) -> None:
    """Every parameter of upstream's ``fn`` is one the vacc signature translates, with a
    default it knows (``None`` in ``allowed`` means "no default"): a new parameter, or a
    changed default, would change what the rewritten unit computes without reaching it."""
    p = fn.params
    signature = f"{fn.name.value}({', '.join(s.param_names(fn))})"
    for param in (*p.posonly_params, *p.params, *p.kwonly_params):
        name = param.name.value
        default = None if param.default is None else s.render(param.default).strip()
        if name not in allowed:
            raise codemod.drift(
                unit, f"forward takes `{name}`, a parameter no rule translates", node=fn, nearest=signature
            )  # type: ignore[attr-defined]
        if default not in allowed[name]:
            raise codemod.drift(  # type: ignore[attr-defined]
                unit,
                f"parameter `{name}` has default `{default}`, which no rule knows",
                node=fn,
                nearest=signature,
            )
    if isinstance(p.star_arg, cst.Param) and "*" + p.star_arg.name.value not in allowed:
        raise codemod.drift(unit, f"forward takes `*{p.star_arg.name.value}`", node=fn)  # type: ignore[attr-defined]
    if p.star_kwarg is not None and "**" + p.star_kwarg.name.value not in allowed:
        raise codemod.drift(unit, f"forward takes `**{p.star_kwarg.name.value}`", node=fn)  # type: ignore[attr-defined]


def check_defaults(codemod: object, unit: str, fn: cst.FunctionDef, known: dict[str, set[str]]) -> None:
    """Every parameter of ``fn`` that has a default has one of those ``known`` for it: where a
    rewrite does not carry a default (it binds the caller's argument, or removes the
    parameter), a changed default would vanish without a word."""
    p = fn.params
    for param in (*p.posonly_params, *p.params, *p.kwonly_params):
        if param.default is None:
            continue
        name, default = param.name.value, s.render(param.default).strip()
        if default not in known.get(name, ()):
            raise codemod.drift(  # type: ignore[attr-defined]
                unit,
                f"parameter `{name}` has default `{default}`, which no rule knows",
                node=fn,
                nearest=f"{fn.name.value}({', '.join(s.param_names(fn))})",
            )


# -- names -----------------------------------------------------------------------------------------
def module_names(module: cst.Module) -> set[str]:
    """Names bound at module level: definitions, assignments and imports, also inside top-level
    ``if``/``try`` blocks.  A walk over statements only (no rendering): it runs for every
    rewritten unit."""
    out: set[str] = set()
    _bind_block(module.body, out)
    return out


def _bind_block(stmts: Sequence[cst.CSTNode], out: set[str]) -> None:
    for stmt in stmts:
        if isinstance(stmt, cst.ClassDef | cst.FunctionDef):
            out.add(stmt.name.value)
        elif isinstance(stmt, cst.SimpleStatementLine):
            for small in stmt.body:
                _bind_small(small, out)
        elif isinstance(stmt, cst.If | cst.Try | cst.Else | cst.Finally | cst.ExceptHandler):
            _bind_block(stmt.body.body if isinstance(stmt.body, cst.IndentedBlock) else [stmt.body], out)
            for attr in ("orelse", "finalbody"):
                part = getattr(stmt, attr, None)
                if part is not None:
                    _bind_block([part], out)
            for handler in getattr(stmt, "handlers", ()):
                _bind_block([handler], out)
        elif isinstance(stmt, cst.SimpleStatementSuite):
            for small in stmt.body:
                _bind_small(small, out)


def _bind_small(small: cst.CSTNode, out: set[str]) -> None:
    if isinstance(small, cst.Import | cst.ImportFrom) and not isinstance(small.names, cst.ImportStar):
        for alias in small.names:
            name = alias.asname.name if alias.asname else alias.name
            out.add((s.dotted(name) or "").split(".")[0])
    elif isinstance(small, cst.Assign):
        for target in small.targets:
            out |= {n.value for n in _target_names(target.target)}
    elif isinstance(small, cst.AnnAssign | cst.AugAssign):
        out |= {n.value for n in _target_names(small.target)}


def _target_names(target: cst.CSTNode) -> list[cst.Name]:
    if isinstance(target, cst.Name):
        return [target]
    if isinstance(target, cst.Tuple | cst.List):
        return [n for e in target.elements for n in _target_names(e.value)]
    if isinstance(target, cst.StarredElement):
        return _target_names(target.value)
    return []


def check_upstream_names(codemod: object, unit: str, fn: cst.FunctionDef, module: cst.Module) -> None:
    """Upstream's own unit must not read a local value that nothing defines: if it does, the
    statement defining it has gone (and a rule that drops or translates its users would hide
    that).  Only names read as plain values count — not called, not an attribute's base, not
    in annotations or decorators — so that an incomplete module (a test snippet) missing a
    helper or an import is not taken for a broken unit."""
    values = _ValueNames()
    for stmt in fn.body.body:  # type: ignore[union-attr]
        stmt.visit(values)
    local_looking = {n for n in values.names if not n[:1].isupper()}  # not a class, not a CONSTANT
    left = sorted(set(unresolved(fn, module_names(module))) & local_looking)
    if left:
        raise codemod.drift(  # type: ignore[attr-defined]
            unit, f"upstream's own code uses {', '.join(left)}, which nothing defines", node=fn
        )


class _ValueNames(cst.CSTVisitor):
    """Names read as plain values: ``x`` in ``f(x)``, ``a + x``, ``x[0]`` — not ``x(...)``, ``x.y``."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_Call(self, node: cst.Call) -> bool:
        if not isinstance(node.func, cst.Name):
            node.func.visit(self)
        for arg in node.args:
            arg.value.visit(self)
        return False

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        return False

    def visit_Annotation(self, node: cst.Annotation) -> bool:
        return False

    def visit_Name(self, node: cst.Name) -> None:
        self.names.add(node.value)


def unresolved(fn: cst.FunctionDef, known_globals: set[str]) -> list[str]:
    """Names ``fn`` reads that nothing defines: not a parameter, not assigned in it, not a
    module-level name, not a builtin.  A kept statement using a name the rewrite removed
    (``cache_position``, ``kwargs``) shows up here."""
    tree = ast.parse(textwrap.dedent(s.render(fn)))
    func = tree.body[0]
    assert isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef)
    args = func.args
    local = {a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)}
    local |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
    loads: list[str] = []
    for node in ast.walk(func):
        if isinstance(node, ast.Name):
            (local.add if isinstance(node.ctx, ast.Store | ast.Del) else loads.append)(node.id)
        elif isinstance(node, ast.arg):
            local.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            local.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            local |= {(a.asname or a.name).split(".")[0] for a in node.names}
    known = local | known_globals | set(dir(builtins))
    return sorted({name for name in loads if name not in known})


# -- calls -----------------------------------------------------------------------------------------
def decorator_name(decorator: cst.Decorator) -> str:
    """``deprecate_kwarg`` for ``@deprecate_kwarg(...)``, ``auto_docstring`` for ``@auto_docstring``."""
    node = decorator.decorator
    return s.dotted(node.func if isinstance(node, cst.Call) else node) or ""


def retarget_args(
    codemod: object,
    unit: str,
    call: cst.Call,
    *,
    dropped: Sequence[str] = (),
    renamed: dict[str, str] | None = None,
    needed: Sequence[str] = (),
    node: cst.CSTNode | None = None,
) -> cst.Call:
    """A call of a module whose vacc form takes other plumbing, edited in place: keyword
    arguments in ``dropped`` go (each must pass the variable of its own name, ``x=x``: anything
    else would be a computation lost), as does ``**kwargs`` (or ``**flash_attn_kwargs``, Mistral
    4.48's name for the forward's own keyword arguments); a keyword in ``renamed`` becomes
    its new name, passing the variable of that name (its old value must be one of the renamed
    variables); each of ``needed`` missing is added as ``x=x``.  Every other argument stays
    upstream's, whatever it computes."""
    renamed = renamed or {}
    args = list(call.args)

    def fail(why: str) -> Exception:
        return codemod.drift(unit, why, node=node)  # type: ignore[attr-defined]

    for arg in args:
        keyword = arg.keyword.value if arg.keyword else None
        if arg.star == "**":
            if not m.matches(arg.value, m.Name("kwargs") | m.Name("flash_attn_kwargs")):  # a forward's **
                raise fail(f"the call passes `**{s.render(arg.value)}`, which no rule knows")
        elif arg.star:
            raise fail("the call passes `*args`, which no rule knows")
        elif keyword in dropped and not m.matches(arg.value, m.Name(keyword)):
            raise fail(
                f"the call passes `{keyword}={s.render(arg.value)}`; only `{keyword}={keyword}` can be dropped"
            )
        elif keyword in renamed and not (isinstance(arg.value, cst.Name) and arg.value.value in renamed):
            raise fail(f"the call passes `{keyword}={s.render(arg.value)}`, which no rule knows")
    kept = lay.drop_items(
        args, lambda a: a.star == "**" or (a.keyword is not None and a.keyword.value in dropped)
    )
    kept = [
        a.with_changes(keyword=cst.Name(renamed[a.keyword.value]), value=cst.Name(renamed[a.keyword.value]))
        if a.keyword is not None and a.keyword.value in renamed
        else a
        for a in kept
    ]
    present = {a.keyword.value for a in kept if a.keyword is not None}
    missing = [name for name in needed if name not in present]
    if missing and sum(1 for a in kept if a.keyword is None and not a.star) > 1:
        raise fail("the call passes positional arguments after the first; no rule knows which they are")
    if missing and not kept:
        kept = [
            cst.Arg(cst.Name(name), keyword=cst.Name(name), equal=cst.AssignEqual(
                whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace("")
            ), comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
            for name in missing
        ]  # fmt: skip
        kept[-1] = kept[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
    elif missing:
        last_comma = kept[-1].comma
        between = kept[-2].comma if len(kept) > 1 else cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
        closing = kept[-1].whitespace_after_arg  # the layout before `)` moves to the new last argument
        kept[-1] = kept[-1].with_changes(comma=between, whitespace_after_arg=cst.SimpleWhitespace(""))
        extra = [
            cst.Arg(cst.Name(name), keyword=cst.Name(name), equal=cst.AssignEqual(
                whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace("")
            ), comma=between)
            for name in missing
        ]  # fmt: skip
        extra[-1] = extra[-1].with_changes(comma=last_comma, whitespace_after_arg=closing)
        kept += extra
    return call.with_changes(args=kept)


# -- whole units -------------------------------------------------------------------------------------
def unit_digest(node: cst.CSTNode) -> str:
    """sha256 of a unit as Python (``ast.dump`` with docstrings removed): the same for the same
    code however it is formatted or commented.  For units a codemod replaces whole because the
    contract fixes them (``prepare_inputs_for_generation``): each upstream form it replaces is
    recognised by this digest, so any change to such a unit stops the run for a human instead of
    vanishing.  Digests, not source, so that no upstream code is committed."""
    import hashlib

    tree = ast.parse(textwrap.dedent(s.render(node)))
    for sub in ast.walk(tree):
        body = getattr(sub, "body", None)
        if (
            isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            sub.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()
