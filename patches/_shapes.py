"""The shared matching vocabulary of the codemods: finding units, named matchers, scans.

"The attention class", "an assignment to ``self.x``", "a call of ``self.mlp``" mean the
same thing in every codemod because they are spelled once, here.  Everything works on
libcst nodes and only reads them; rendered source is only ever produced for messages and
line counts.  Building and laying out new code is :mod:`patches._layout`.
"""

from __future__ import annotations

import ast
import difflib
import textwrap
from collections.abc import Callable, Sequence

import libcst as cst
import libcst.matchers as m

Statement = cst.BaseStatement | cst.BaseSmallStatement

PACKAGE = "transformers.models.gemma"


# -- rendering and comparing -----------------------------------------------------------------
def render(node: cst.CSTNode) -> str:
    """Source of one node, for messages and comparisons."""
    return code(node)


#: id(node) -> (node, indent, newline, source): what ``code`` rendered.  libcst nodes are
#: immutable, so a node's source (at the top indentation level, with a given default indent
#: and newline) never changes; the entry holds the node, so its id cannot be reused while the
#: entry lives.  The series renders the same units several times (a codemod's line counts
#: render its result, the next codemod's render the same objects as its input, the output
#: renders them again): this makes each render happen once per run.
_CODE: dict[int, tuple[cst.CSTNode, str, str, str]] = {}


def code(node: cst.CSTNode, indent: str = "    ", newline: str = "\n") -> str:
    """``cst.Module(default_indent=indent, default_newline=newline).code_for_node(node)``,
    rendered once per node object (see ``_CODE``)."""
    hit = _CODE.get(id(node))
    if hit is not None and hit[0] is node and hit[1] == indent and hit[2] == newline:
        return hit[3]
    if len(_CODE) > 20000:
        _CODE.clear()
    text = cst.Module(body=[], default_indent=indent, default_newline=newline).code_for_node(node)
    _CODE[id(node)] = (node, indent, newline, text)
    return text


def forget_code() -> None:
    """Drop ``code``'s renders (the engine does at the end of each run, to bound memory)."""
    _CODE.clear()


def module_code(module: cst.Module) -> str:
    """``module.code``, from the renders ``code`` already holds for its top-level statements.

    Byte-identical to ``module.code``: a module renders as its header lines, its statements
    and its footer lines one after the other (each at the top level, with the module's
    indent and newline), then adds a newline to an empty file or drops the last one from a
    file without a trailing newline; those two rare cases are left to libcst."""
    if not module.has_trailing_newline or not (module.header or module.body or module.footer):
        return module.code
    indent, newline = module.default_indent, module.default_newline
    return (
        "".join(module.code_for_node(line) for line in module.header)
        + "".join(code(stmt, indent, newline) for stmt in module.body)
        + "".join(module.code_for_node(line) for line in module.footer)
    )


def same_code(a: cst.CSTNode, b: cst.CSTNode) -> bool:
    """Equal as Python, whatever the formatting, quotes or comments (libcst's
    ``deep_equals`` sees all three, which would break idempotence on reformatted files)."""
    return _ast_dump(a) == _ast_dump(b)


def _ast_dump(node: cst.CSTNode) -> str:
    return ast.dump(ast.parse(textwrap.dedent(render(node))))


# -- finding things --------------------------------------------------------------------------
def stmt_name(stmt: cst.CSTNode) -> str | None:
    """The name a top-level statement defines: class, def, or ``NAME = ...``."""
    if isinstance(stmt, cst.ClassDef | cst.FunctionDef):
        return stmt.name.value
    if m.matches(stmt, m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(target=m.Name())])])):
        return stmt.body[0].targets[0].target.value  # type: ignore[attr-defined]
    if m.matches(stmt, m.SimpleStatementLine(body=[m.AnnAssign(target=m.Name())])):
        return stmt.body[0].target.value  # type: ignore[attr-defined]
    return None


def find(body: Sequence[cst.CSTNode], name: str) -> int | None:
    """Index of the statement defining ``name`` in ``body``, or None."""
    for i, stmt in enumerate(body):
        if stmt_name(stmt) == name:
            return i
    return None


def names(body: Sequence[cst.CSTNode]) -> list[str]:
    """Every name the statements of ``body`` define (for "nearest match" hints)."""
    return [n for n in map(stmt_name, body) if n]


#: What the units the series works on are made of (names their bodies use), for finding them
#: again when upstream renames one: a ``GemmaBlock`` using ``self_attn``, ``mlp`` and both
#: layer norms is the decoder layer, whatever its name.
MADE_OF: dict[str, frozenset[str]] = {
    "GemmaRotaryEmbedding": frozenset({"inv_freq", "cos", "sin", "forward"}),
    "GemmaAttention": frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "head_dim"}),
    "GemmaDecoderLayer": frozenset({"self_attn", "mlp", "input_layernorm", "post_attention_layernorm"}),
    "GemmaPreTrainedModel": frozenset(
        {"config_class", "base_model_prefix", "_init_weights", "_no_split_modules"}
    ),
    "GemmaModel": frozenset({"embed_tokens", "layers", "norm", "post_init"}),
    "GemmaForCausalLM": frozenset({"lm_head", "model", "logits"}),
    "GemmaForSequenceClassification": frozenset({"pooled_logits", "GenericForSequenceClassification"}),
    "apply_rotary_pos_emb": frozenset({"rotate_half", "cos", "sin", "q_embed", "k_embed"}),
    "eager_attention_forward": frozenset({"repeat_kv", "attn_weights", "softmax", "scaling"}),
}


def closest(body: Sequence[cst.CSTNode], name: str, cutoff: float = 0.6) -> str | None:
    """The definition in ``body`` most like the missing ``name``: the same kind (class, or
    function and constant), scored by name likeness plus, for the units of ``MADE_OF``, the
    share of their ingredients it uses.  None when nothing comes close (``cutoff``).
    Used only to explain a drift, so it may afford a visit of each candidate."""
    made_of = MADE_OF.get(name, frozenset())
    want_class = name[:1].isupper() and not name.isupper()  # CamelCase, not a CONSTANT
    best, best_score = None, cutoff
    for stmt in body:
        other = stmt_name(stmt)
        if not other or other == name or isinstance(stmt, cst.ClassDef) != want_class:
            continue
        score = difflib.SequenceMatcher(a=name, b=other, autojunk=False).ratio()
        if made_of and isinstance(stmt, cst.ClassDef | cst.FunctionDef):
            score += len(made_of & scan(stmt).names) / len(made_of)
        if score > best_score:
            best, best_score = other, score
    return best


def find_class(module: cst.Module, name: str) -> tuple[int, cst.ClassDef] | None:
    i = find(module.body, name)
    if i is None or not isinstance(module.body[i], cst.ClassDef):
        return None
    return i, module.body[i]  # type: ignore[return-value]


def find_function(module: cst.Module, name: str) -> tuple[int, cst.FunctionDef] | None:
    i = find(module.body, name)
    if i is None or not isinstance(module.body[i], cst.FunctionDef):
        return None
    return i, module.body[i]  # type: ignore[return-value]


def class_body(cls: cst.ClassDef) -> list[cst.BaseStatement]:
    return list(cls.body.body)  # type: ignore[arg-type]


def find_method(cls: cst.ClassDef, name: str) -> tuple[int, cst.FunctionDef] | None:
    body = class_body(cls)
    i = find(body, name)
    if i is None or not isinstance(body[i], cst.FunctionDef):
        return None
    return i, body[i]  # type: ignore[return-value]


def fn_body(fn: cst.FunctionDef) -> list[cst.BaseStatement]:
    return list(fn.body.body)  # type: ignore[arg-type]


def param_names(fn: cst.FunctionDef) -> list[str]:
    p = fn.params
    out = [x.name.value for x in (*p.posonly_params, *p.params, *p.kwonly_params)]
    if isinstance(p.star_arg, cst.Param):
        out.append("*" + p.star_arg.name.value)
    if p.star_kwarg is not None:
        out.append("**" + p.star_kwarg.name.value)
    return out


def docstring_stmt(body: Sequence[cst.CSTNode]) -> cst.BaseStatement | None:
    """The docstring statement at the head of a block, if any."""
    if body and m.matches(body[0], m.SimpleStatementLine(body=[m.Expr(value=m.SimpleString())])):
        return body[0]  # type: ignore[return-value]
    if body and m.matches(body[0], m.SimpleStatementLine(body=[m.Expr(value=m.ConcatenatedString())])):
        return body[0]  # type: ignore[return-value]
    return None


def small_statements(node: cst.CSTNode | Sequence[cst.CSTNode]) -> list[cst.BaseSmallStatement]:
    """The simple statements of a block or a list of statements, seeing through ``a; b`` lines
    and one-line suites (``if x: y``) — so that matching does not depend on such formatting.
    Compound statements inside are not entered."""
    if isinstance(node, cst.IndentedBlock | cst.SimpleStatementSuite):
        node = node.body
    if isinstance(node, cst.SimpleStatementLine):
        node = [node]
    out: list[cst.BaseSmallStatement] = []
    for item in node:  # type: ignore[union-attr]
        if isinstance(item, cst.SimpleStatementLine):
            out.extend(item.body)
        elif isinstance(item, cst.BaseSmallStatement):
            out.append(item)
    return out


def assignment(small: cst.CSTNode) -> tuple[str, cst.BaseExpression | None] | None:
    """``(target, value)`` of ``target = value`` or ``target: T = value`` with one dotted
    target, else None."""
    if isinstance(small, cst.Assign) and len(small.targets) == 1:
        name = dotted(small.targets[0].target)
        return (name, small.value) if name else None
    if isinstance(small, cst.AnnAssign):
        name = dotted(small.target)
        return (name, small.value) if name else None
    return None


def find_assignment(node: cst.CSTNode | Sequence[cst.CSTNode], target: str) -> cst.BaseExpression | None:
    """The value assigned to ``target`` among the simple statements of ``node``."""
    for small in small_statements(node):
        hit = assignment(small)
        if hit and hit[0] == target:
            return hit[1]
    return None


def statement_index(
    stmts: Sequence[cst.CSTNode], pred: Callable[[cst.BaseSmallStatement], bool]
) -> int | None:
    """Index of the first statement (of a block) holding a simple statement matching ``pred``."""
    for i, stmt in enumerate(stmts):
        if any(pred(x) for x in small_statements([stmt])):
            return i
    return None


# -- named matchers --------------------------------------------------------------------------
def self_attr(name: str) -> m.Attribute:
    """``self.<name>``"""
    return m.Attribute(value=m.Name("self"), attr=m.Name(name))


def call_of(func: m.BaseMatcherNode) -> m.Call:
    return m.Call(func=func)


def assigns(target: m.BaseMatcherNode, value: m.BaseMatcherNode | None = None) -> m.SimpleStatementLine:
    """A line ``<target> = <value>``."""
    assign = m.Assign(targets=[m.AssignTarget(target=target)], value=value or m.DoNotCare())
    return m.SimpleStatementLine(body=[assign])


def contains(node: cst.CSTNode, matcher: m.BaseMatcherNode) -> bool:
    return bool(m.findall(node, matcher))


def first_index(body: Sequence[cst.CSTNode], pred: Callable[[cst.CSTNode], bool]) -> int | None:
    for i, stmt in enumerate(body):
        if pred(stmt):
            return i
    return None


class Scan(cst.CSTVisitor):
    """What a subtree calls and names, gathered in one plain traversal (several
    ``m.findall`` over a long method cost several traversals with a matcher test per node)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.names: set[str] = set()

    def visit_Call(self, node: cst.Call) -> None:
        name = dotted(node.func)
        if name is None and isinstance(node.func, cst.Attribute):
            name = "<expr>." + node.func.attr.value  # a method of a computed value: `x.int().argmax`
        if name:
            self.calls.append(name)

    def visit_Name(self, node: cst.Name) -> None:
        self.names.add(node.value)


def dotted(node: cst.CSTNode) -> str | None:
    """``a.b.c`` for a name or attribute chain, else None."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr.value}" if base else None
    return None


def scan(node: cst.CSTNode) -> Scan:
    """The dotted names ``node`` calls (in source order) and every name it uses."""
    visitor = Scan()
    node.visit(visitor)
    return visitor


def calls(node: cst.CSTNode) -> list[str]:
    """The dotted names called anywhere in ``node`` (``self.mlp``, ``torch.arange`` …)."""
    return scan(node).calls
