"""The statement-accounting engine the rewriting codemods share (``patches/_rules.py``)."""

from __future__ import annotations

import textwrap

import libcst as cst
import pytest
from libcst.codemod import CodemodContext

from patches import _layout as lay
from patches import _rules as r
from patches._base import Drift, VaccCodemod


class Probe(VaccCodemod):
    """A codemod only there to give the engine a ``drift()``."""

    NAME = "probe"
    DESCRIPTION = "test double"
    TARGETS = ("Unit.forward",)
    SHAPES = {"only": "the only shape"}


UNIT = "Unit.forward"
PLUMBING = frozenset({"cache", "cache_position", "kwargs"})


def probe() -> Probe:
    return Probe(CodemodContext())


def stmts(source: str) -> list[cst.BaseStatement]:
    return lay.parse_stmts(textwrap.dedent(source))


def code(body: list[cst.BaseStatement]) -> str:
    return cst.Module(body=body).code


def stmt(source: str) -> cst.BaseStatement:
    (node,) = stmts(source)
    return node


def call(source: str) -> cst.Call:
    node = cst.parse_expression(textwrap.dedent(source).strip())
    assert isinstance(node, cst.Call)
    return node


def expr_code(node: cst.CSTNode) -> str:
    return cst.Module(body=[]).code_for_node(node)


# -- known(): strict recognition -----------------------------------------------------------------

UPDATE = "key, value = cache.update(key, value, self.layer_idx)"


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(UPDATE, id="same"),
        pytest.param("key, value = cache.update(\n    key, value, self.layer_idx\n)", id="wrapped"),
        pytest.param("key, value = cache.update(key, value, self.layer_idx,)", id="trailing-comma"),
        pytest.param("(key, value) = (cache.update(key, value, self.layer_idx))", id="parenthesised"),
        pytest.param("key, value = cache.update(key, value, self.layer_idx)  # note", id="trailing-comment"),
        pytest.param("# why\nkey, value = cache.update(key, value, self.layer_idx)", id="leading-comment"),
    ],
)
def test_known_ignores_formatting_and_comments(source: str) -> None:
    assert r.known(UPDATE)(stmt(source))


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("key, value = cache.update(key, value, self.layer_idx, extra)", id="extra-argument"),
        pytest.param("key, value = cache.update(value, key, self.layer_idx)", id="swapped-arguments"),
        pytest.param("key, value = cache.update(key, value, self.layer_idx) * 2", id="scaled"),
        pytest.param("value, key = cache.update(key, value, self.layer_idx)", id="other-targets"),
        pytest.param("key, value = cache.append(key, value, self.layer_idx)", id="other-method"),
    ],
)
def test_known_sees_code(source: str) -> None:
    assert not r.known(UPDATE)(stmt(source))


def test_known_compound_statements_and_quotes() -> None:
    known = r.known(
        """
        if x is not None:
            y = getattr(self, "y", y)
        """,
        "z = 1",
    )
    assert known(stmt("if x is not None:\n    # a comment inside\n    y = getattr(self, 'y', y)\n"))
    assert known(stmt("z = 1"))
    assert not known(stmt("if x is not None:\n    y = getattr(self, 'y', y)\n    z = 1\n"))
    assert not known(stmt("if x is None:\n    y = getattr(self, 'y', y)\n"))


def test_known_recognises_an_expression_lifted_out_of_brackets() -> None:
    # ``past_key_values=x if c else None`` wrapped by a formatter inside a call spans lines
    # without brackets of its own: as a statement it would not parse.
    call = cst.parse_expression(
        "Output(\n    past_key_values=past_key_values\n    if use_cache\n    else None,\n)"
    )
    value = call.args[0].value
    lifted = cst.SimpleStatementLine([cst.Expr(value)])
    assert "\n" in cst.Module([]).code_for_node(lifted).strip()
    assert r.known("past_key_values if use_cache else None")(lifted)
    assert not r.known("past_key_values if use_cache else ()")(lifted)


@pytest.mark.parametrize(
    "source, line",
    [
        pytest.param("f(a)", "f(a)", id="one-line-as-is"),
        pytest.param(
            'use_kernel_func_from_hub(\n    "rotary_pos_emb"\n)',
            "use_kernel_func_from_hub('rotary_pos_emb')",
            id="wrapped-call",
        ),
        pytest.param("a\nif b\nelse c", "a if b else c", id="bare-wrapped-expression"),
    ],
)
def test_one_line(source: str, line: str) -> None:
    text = r.one_line(cst.parse_expression(f"(\n{source}\n)").with_changes(lpar=[], rpar=[]))
    assert text == line and "\n" not in text


def test_first_line() -> None:
    assert r.first_line(stmt("# leading\nx = f(a)  # trailing\n")) == "x = f(a)  # trailing"
    assert r.first_line(stmt("if a:\n    b = 1\n")) == "if a: …"
    assert r.first_line(stmt("x = f(\n    a,\n)\n")) == "x = f( …"


# -- names -----------------------------------------------------------------------------------------


def test_variables_leave_out_attribute_names_and_keywords() -> None:
    node = stmt("out = self.model(x, cache=outputs.cache, mask=mask[cache_position])")
    assert r.variables(node) == {"out", "self", "x", "outputs", "mask", "cache_position"}


@pytest.mark.parametrize(
    ("source", "names"),
    [
        pytest.param("if cache is not None:\n    x = kwargs\n", {"cache", "None"}, id="if"),
        pytest.param("while cache:\n    x = kwargs\n", {"cache"}, id="while"),
        pytest.param("for i in cache:\n    x = kwargs\n", {"i", "cache"}, id="for"),
        pytest.param("with ctx(cache) as c:\n    x = kwargs\n", {"ctx", "cache", "c"}, id="with"),
        pytest.param("try:\n    x = kwargs\nexcept Error:\n    pass\n", {"Error"}, id="try"),
        pytest.param("def f(kwargs):\n    return kwargs\n", {"f"}, id="def"),
        pytest.param("x = kwargs[cache]", {"x", "kwargs", "cache"}, id="simple"),
    ],
)
def test_header_names(source: str, names: set[str]) -> None:
    assert r.header_names(stmt(source)) == names


@pytest.mark.parametrize(
    ("source", "name"),
    [
        pytest.param("@deprecate_kwarg('a', new_name='b')\ndef f(): pass\n", "deprecate_kwarg", id="call"),
        pytest.param("@auto_docstring\ndef f(): pass\n", "auto_docstring", id="name"),
        pytest.param("@torch.no_grad()\ndef f(): pass\n", "torch.no_grad", id="dotted-call"),
    ],
)
def test_decorator_name(source: str, name: str) -> None:
    fn = stmt(source)
    assert isinstance(fn, cst.FunctionDef)
    assert r.decorator_name(fn.decorators[0]) == name


# -- Accountant.block ------------------------------------------------------------------------------

HOOK_DROPPED = "# vacc: dropped (static-hook): cache = getattr(self, 'cache', cache)"
DROP_HOOK = r.Rule(
    "static-hook", r.DROP, "no static caches", r.known("cache = getattr(self, 'cache', cache)")
)
TRANSLATE_UPDATE = r.Rule(
    "tuple-cache",
    r.TRANSLATE,
    "tuple cache",
    r.known(UPDATE),
    lambda _: stmts("key = torch.cat([cache[0], key], dim=2)\nvalue = torch.cat([cache[1], value], dim=2)\n"),
)


def account(*rules: r.Rule) -> r.Accountant:
    return r.Accountant(probe(), UNIT, list(rules), PLUMBING)


def test_kept_statements_are_upstreams_own_nodes() -> None:
    body = stmts(
        """
        # the scores
        scores = q @ k.transpose(2, 3)  # keep   me

        probs = scores.softmax(-1)
        """
    )
    out = account(DROP_HOOK, TRANSLATE_UPDATE).block(body)
    assert len(out) == len(body) and all(a is b for a, b in zip(out, body, strict=True))


def test_translate_drop_and_keep_in_place() -> None:
    before = """\
x = self.proj(h)

# a static-cache hook
cache = getattr(self, 'cache', cache)
# the cache update
key, value = cache.update(key, value, self.layer_idx)
y = x * 2
"""
    after = """\
x = self.proj(h)

# a static-cache hook
# vacc: dropped (static-hook): cache = getattr(self, 'cache', cache)
# the cache update
key = torch.cat([cache[0], key], dim=2)
value = torch.cat([cache[1], value], dim=2)
y = x * 2
"""
    accountant = account(DROP_HOOK, TRANSLATE_UPDATE)
    assert code(accountant.block(stmts(before))) == after
    assert accountant.ledger == [
        ("unchanged-code", r.KEEP, "x = self.proj(h)"),
        ("static-hook", r.DROP, "cache = getattr(self, 'cache', cache)"),
        ("tuple-cache", r.TRANSLATE, UPDATE),
        ("unchanged-code", r.KEEP, "y = x * 2"),
    ]


def test_a_translation_keeps_its_places_leading_lines_before_its_own() -> None:
    commented = r.Rule("noted", r.TRANSLATE, "", r.known("a = b"), lambda _: stmts("# vacc: new\na = c\n"))
    out = account(commented).block(stmts("x = 1\n\n# upstream's comment\na = b\n"))
    assert code(out) == "x = 1\n\n# upstream's comment\n# vacc: new\na = c\n"


def test_a_translation_built_from_the_statement_keeps_its_leading_lines_once() -> None:
    with_changes = r.Rule(
        "edited",
        r.TRANSLATE,
        "",
        r.known("a = f(b)"),
        lambda x: [x.with_changes(body=[stmt("a = f(c)").body[0]])],
    )
    out = account(with_changes).block(stmts("# upstream's comment\na = f(b)\n"))
    assert code(out) == "# upstream's comment\na = f(c)\n"


class _BToC(cst.CSTTransformer):
    def leave_Name(self, original: cst.Name, updated: cst.Name) -> cst.Name:
        return updated.with_changes(value="c") if updated.value == "b" else updated


def test_a_translation_visited_by_a_transformer_keeps_its_leading_lines_once() -> None:
    visited = r.Rule("visited", r.TRANSLATE, "", r.known("a = f(b)"), lambda x: [x.visit(_BToC())])
    out = account(visited).block(stmts("# upstream's comment\na = f(b)\n"))
    assert code(out) == "# upstream's comment\na = f(c)\n"


def test_drops_in_a_row_and_a_multiline_statement() -> None:
    drop = r.Rule("gone", r.DROP, "", lambda x: "gone" in r.variables(x))
    before = """\
a = 1
gone = 2

gone = f(
    3,
)
b = 4
"""
    after = """\
a = 1
# vacc: dropped (gone): gone = 2

# vacc: dropped (gone): gone = f( …
b = 4
"""
    assert code(account(drop).block(stmts(before))) == after


def test_dropped_at_the_end_of_a_block_the_comments_lead_a_pass() -> None:
    before = "a = 1\n# trailing hook\ncache = getattr(self, 'cache', cache)\n"
    after = (
        "a = 1\n# trailing hook\n# vacc: dropped (static-hook): cache = getattr(self, 'cache', cache)\npass\n"
    )
    assert code(account(DROP_HOOK).block(stmts(before))) == after


def test_a_block_emptied_by_drops_is_indented_pass() -> None:
    (node,) = stmts("if flag:\n    cache = getattr(self, 'cache', cache)\n")
    assert isinstance(node, cst.If)
    out = account(DROP_HOOK).block([node])
    assert code(out) == (
        "if flag:\n    # vacc: dropped (static-hook): cache = getattr(self, 'cache', cache)\n    pass\n"
    )
    compile(code(out), "<out>", "exec")


def test_drop_comments_stand_before_a_following_translation_and_its_leading_lines() -> None:
    before = "cache = getattr(self, 'cache', cache)\n\n# update\n" + UPDATE + "\n"
    after = (
        "# vacc: dropped (static-hook): cache = getattr(self, 'cache', cache)\n"
        "\n# update\nkey = torch.cat([cache[0], key], dim=2)\nvalue = torch.cat([cache[1], value], dim=2)\n"
    )
    assert code(account(DROP_HOOK, TRANSLATE_UPDATE).block(stmts(before))) == after


def test_first_matching_rule_wins() -> None:
    first = r.Rule("first", r.DROP, "", r.known("a = cache"))
    second = r.Rule("second", r.TRANSLATE, "", r.known("a = cache"), lambda _: stmts("a = 0"))
    accountant = account(first, second)
    accountant.block(stmts("a = cache"))
    assert accountant.ledger == [("first", r.DROP, "a = cache")]


def test_a_keep_rule_keeps_a_statement_using_plumbing() -> None:
    keep = r.Rule("present-return", r.KEEP, "", r.known("return out, cache"))
    body = stmts("return out, cache")
    assert account(keep).block(body)[0] is body[0]


@pytest.mark.parametrize(
    ("source", "plumbing"),
    [
        pytest.param("cache_position = cache_position + 1", "cache_position", id="simple"),
        pytest.param("dropout = kwargs.get('dropout', 0.0)", "kwargs", id="kwargs"),
        pytest.param("if cache is not None:\n    x = 1\n", "cache", id="compound-header"),
        pytest.param("for layer in cache:\n    x = 1\n", "cache", id="for-iterable"),
        pytest.param(
            "key, value = cache.update(key, value, self.layer_idx, cache_position)",
            "cache, cache_position",
            id="translate-form-perturbed",
        ),
    ],
)
def test_plumbing_no_rule_knows_is_drift(source: str, plumbing: str) -> None:
    body = stmts("x = 1\n" + source)
    with pytest.raises(Drift) as info:
        account(DROP_HOOK, TRANSLATE_UPDATE).block(body)
    drift = info.value
    assert (drift.codemod, drift.target, drift.known) == ("probe", UNIT, ("only",))
    assert drift.node is body[1]
    assert f"`{r.first_line(body[1])}`" in drift.found and f"it uses {plumbing}," in drift.found


def test_attribute_names_and_keywords_are_not_plumbing() -> None:
    body = stmts("x = self.cache.kwargs\ny = f(cache=x)\n")
    assert account().block(body) == body


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param(
            "if flag:\n    a = 1\n    cache = getattr(self, 'cache', cache)\n",
            "if flag:\n    a = 1\n    " + HOOK_DROPPED + "\n    pass\n",
            id="if",
        ),
        pytest.param(
            "if flag:\n    a = 1\nelif other:\n    cache = getattr(self, 'cache', cache)\n    b = 2\n"
            "else:\n    cache = getattr(self, 'cache', cache)\n    c = 3\n",
            "if flag:\n    a = 1\nelif other:\n"
            "    # vacc: dropped (static-hook): cache = getattr(self, 'cache', cache)\n    b = 2\n"
            "else:\n    # vacc: dropped (static-hook): cache = getattr(self, 'cache', cache)\n    c = 3\n",
            id="elif-else",
        ),
        pytest.param(
            "for i in range(3):\n    cache = getattr(self, 'cache', cache)\n    a = i\n",
            "for i in range(3):\n    " + HOOK_DROPPED + "\n    a = i\n",
            id="for",
        ),
        pytest.param(
            "while flag:\n    cache = getattr(self, 'cache', cache)\n    a = 1\n",
            "while flag:\n    " + HOOK_DROPPED + "\n    a = 1\n",
            id="while",
        ),
        pytest.param(
            "with torch.no_grad():\n    cache = getattr(self, 'cache', cache)\n    a = 1\n",
            "with torch.no_grad():\n    " + HOOK_DROPPED + "\n    a = 1\n",
            id="with",
        ),
        pytest.param(
            "try:\n    cache = getattr(self, 'cache', cache)\n    a = 1\nexcept ValueError:\n"
            "    cache = getattr(self, 'cache', cache)\n    b = 1\nfinally:\n"
            "    cache = getattr(self, 'cache', cache)\n    c = 1\n",
            "try:\n    # vacc: dropped (static-hook): cache = getattr(self, 'cache', cache)\n    a = 1\n"
            "except ValueError:\n    # vacc: dropped (static-hook): cache = getattr(self, 'cache', cache)\n"
            "    b = 1\nfinally:\n    # vacc: dropped (static-hook): cache = getattr(self, 'cache', cache)\n"
            "    c = 1\n",
            id="try",
        ),
    ],
)
def test_a_compound_statement_free_of_plumbing_is_accounted_inside(before: str, after: str) -> None:
    accountant = account(DROP_HOOK)
    assert code(accountant.block(stmts(before))) == after
    assert ("static-hook", r.DROP, "cache = getattr(self, 'cache', cache)") in accountant.ledger


def test_a_compound_statement_left_as_it_was_when_nothing_inside_changes() -> None:
    body = stmts("if flag:\n    # note\n    a = 1\nelse:\n    b = 2\n")
    out = account(DROP_HOOK).block(body)
    assert code(out) == code(body)


def test_plumbing_inside_a_kept_compound_statement_is_drift_at_that_statement() -> None:
    (node,) = stmts("if flag:\n    a = 1\n    b = kwargs['b']\n")
    with pytest.raises(Drift) as info:
        account(DROP_HOOK).block([node])
    assert info.value.node is node.body.body[1]
    assert "kwargs" in info.value.found


def test_a_comment_in_the_statement_does_not_hide_it_from_a_strict_rule() -> None:
    before = "cache = getattr(\n    self,  # the module\n    'cache',\n    cache,\n)\n"
    accountant = account(DROP_HOOK)
    out = accountant.block(stmts(before))
    assert code(out) == "# vacc: dropped (static-hook): cache = getattr( …\npass\n"


# -- check_params ----------------------------------------------------------------------------------

ALLOWED: dict[str, set[str | None]] = {
    "self": {None},
    "hidden_states": {None},
    "mask": {None, "None"},
    "use_cache": {"False"},
    "cache_position": {"None"},
    "**kwargs": {None},
}


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(
            "def forward(self, hidden_states, mask=None, use_cache=False, **kwargs): pass", id="all"
        ),
        pytest.param("def forward(self, hidden_states, mask): pass", id="required-mask"),
        pytest.param(
            "def forward(self, hidden_states: torch.Tensor, mask: Optional[Tensor] = None) -> Tensor: pass",
            id="annotated",
        ),
        pytest.param("def forward(self, hidden_states, *, cache_position=None): pass", id="keyword-only"),
        pytest.param("def forward(self, /, hidden_states, use_cache = False): pass", id="positional-only"),
    ],
)
def test_check_params_accepts_known_parameters(signature: str) -> None:
    fn = stmt(signature)
    r.check_params(probe(), UNIT, fn, ALLOWED)


@pytest.mark.parametrize(
    ("signature", "found"),
    [
        pytest.param("def forward(self, hidden_states, layer_scale=1.0): pass", "`layer_scale`", id="new"),
        pytest.param(
            "def forward(self, hidden_states, use_cache=True): pass", "default `True`", id="default"
        ),
        pytest.param("def forward(self, hidden_states, use_cache): pass", "default `None`", id="no-default"),
        pytest.param("def forward(self, hidden_states, mask=0): pass", "default `0`", id="other-default"),
        pytest.param(
            "def forward(self, *, hidden_states, layer_idx=0): pass", "`layer_idx`", id="kwonly-new"
        ),
        pytest.param("def forward(self, hidden_states, *args): pass", "`*args`", id="star-args"),
        pytest.param("def forward(self, hidden_states, **extra): pass", "`**extra`", id="other-star-kwargs"),
    ],
)
def test_check_params_drifts_on_what_it_does_not_know(signature: str, found: str) -> None:
    fn = stmt(signature)
    with pytest.raises(Drift) as info:
        r.check_params(probe(), UNIT, fn, ALLOWED)
    assert found in info.value.found and info.value.target == UNIT
    assert info.value.node is fn


# -- unresolved ------------------------------------------------------------------------------------

MODULE = cst.parse_module(
    textwrap.dedent(
        """\
        import torch.nn.functional as F
        import math
        from typing import Optional as Opt
        LIMIT = 3
        if True:
            FLAG = 1
        try:
            from fast import kernel
        except ImportError:
            kernel = None

        def helper(x):
            inner_only = 1
            return x

        class Model:
            attribute = 2
        """
    )
)


def test_module_names() -> None:
    names = r.module_names(MODULE)
    assert {"F", "math", "Opt", "LIMIT", "FLAG", "kernel", "helper", "Model"} <= names
    assert not {"torch", "inner_only", "attribute", "x"} & names


def test_unresolved_finds_names_nothing_defines() -> None:
    fn = stmt(
        """
        def forward(self, x, *args, y=None, **kwargs):
            import os
            a = helper(x) + LIMIT + len(args) + math.pi
            for i in range(a):
                b = [j for j in kwargs]
            try:
                pass
            except ValueError as err:
                c = err
            with open(os.devnull) as fh:
                d = fh
            squared = lambda z: z * z
            return F.relu(x) + cache_position + b + c + d + squared(y) + past_key_values[0]
        """
    )
    assert r.unresolved(fn, r.module_names(MODULE)) == ["cache_position", "past_key_values"]


def test_unresolved_is_empty_for_a_closed_function() -> None:
    fn = stmt("def forward(self, x):\n    y = x * 2\n    return Model(), helper(y), kernel\n")
    assert r.unresolved(fn, r.module_names(MODULE)) == []


# -- retarget_args ---------------------------------------------------------------------------------


def retarget(source: str, **kw) -> str:
    return expr_code(r.retarget_args(probe(), UNIT, call(source), **kw))


@pytest.mark.parametrize(
    ("before", "after", "kw"),
    [
        pytest.param(
            "attn(h, mask=m, cache_position=cache_position, **kwargs)",
            "attn(h, mask=m)",
            {"dropped": ("cache_position",)},
            id="dropped-and-star-kwargs",
        ),
        pytest.param(
            "attn(\n    h,\n    mask=m,\n    cache_position=cache_position,\n)",
            "attn(\n    h,\n    mask=m,\n)",
            {"dropped": ("cache_position",)},
            id="dropped-last-keeps-trailing-comma",
        ),
        pytest.param(
            "attn(h, cache=cache, use_cache=use_cache)",
            "attn(h, past_key_value=past_key_value, use_cache=use_cache)",
            {"renamed": {"cache": "past_key_value"}},
            id="renamed",
        ),
        pytest.param(
            "attn(h, past_key_value=past_key_values)",
            "attn(h, past_key_value=past_key_value)",
            {"renamed": {"past_key_value": "past_key_value", "past_key_values": "past_key_value"}},
            id="renamed-value-of-a-renamed-name",
        ),
        pytest.param(
            "attn(h, mask=m)",
            "attn(h, mask=m, output_attentions=output_attentions, use_cache=use_cache)",
            {"needed": ("mask", "output_attentions", "use_cache")},
            id="needed-single-line",
        ),
        pytest.param(
            "attn(\n    h,\n    mask=m,\n)",
            "attn(\n    h,\n    mask=m,\n    use_cache=use_cache,\n)",
            {"needed": ("use_cache",)},
            id="needed-one-per-line",
        ),
        pytest.param(
            "attn(h)",
            "attn(h, use_cache=use_cache)",
            {"needed": ("use_cache",)},
            id="needed-after-one-argument",
        ),
        pytest.param(
            "attn(\n    hidden_states=h,\n    mask=self.mask(h) * 2,\n    cache=cache,\n"
            "    cache_position=cache_position,\n    **kwargs,\n)",
            "attn(\n    hidden_states=h,\n    mask=self.mask(h) * 2,\n    past_key_value=past_key_value,\n"
            "    use_cache=use_cache,\n)",
            {
                "dropped": ("cache_position",),
                "renamed": {"cache": "past_key_value"},
                "needed": ("use_cache",),
            },
            id="all-at-once",
        ),
    ],
)
def test_retarget_args(before: str, after: str, kw: dict) -> None:
    assert retarget(before, **kw) == after


@pytest.mark.parametrize(
    ("before", "kw", "found"),
    [
        pytest.param(
            "attn(h, cache_position=cache_position + 1)",
            {"dropped": ("cache_position",)},
            "`cache_position=cache_position + 1`",
            id="dropped-computed",
        ),
        pytest.param(
            "attn(h, cache_position=position_ids)",
            {"dropped": ("cache_position",)},
            "`cache_position=position_ids`",
            id="dropped-other-variable",
        ),
        pytest.param("attn(h, **extra)", {}, "`**extra`", id="other-star-kwargs"),
        pytest.param("attn(h, *args)", {}, "`*args`", id="star-args"),
        pytest.param(
            "attn(h, cache=self.cache)",
            {"renamed": {"cache": "past_key_value"}},
            "`cache=self.cache`",
            id="renamed-computed",
        ),
    ],
)
def test_retarget_args_is_strict(before: str, kw: dict, found: str) -> None:
    site = stmt("x = 1")
    with pytest.raises(Drift) as info:
        r.retarget_args(probe(), UNIT, call(before), node=site, **kw)
    assert found in info.value.found
    assert info.value.target == UNIT and info.value.node is site


def test_retarget_args_keeps_every_other_argument_as_it_is() -> None:
    before = call("attn(h, mask=m[:, None],  # the mask\n     scale=1 / 8, cache=cache)")
    after = r.retarget_args(probe(), UNIT, before, renamed={"cache": "past_key_value"})
    assert (
        after.args[0] is before.args[0]
        and after.args[1] is before.args[1]
        and after.args[2] is before.args[2]
    )


def test_retarget_args_does_not_repeat_a_needed_argument_already_passed() -> None:
    assert retarget("attn(h, use_cache=False)", needed=("use_cache",)) == "attn(h, use_cache=False)"


def test_retarget_args_needed_after_a_multiline_call_without_trailing_comma() -> None:
    after = retarget("attn(\n    h,\n    mask=m\n)", needed=("use_cache",))
    assert after == "attn(\n    h,\n    mask=m,\n    use_cache=use_cache\n)"


def test_retarget_args_adds_needed_arguments_to_an_emptied_call() -> None:
    assert retarget("attn(**kwargs)", needed=("use_cache",)) == "attn(use_cache=use_cache)"


def test_retarget_args_does_not_pass_a_positional_argument_twice() -> None:
    try:
        out = retarget("layer(h, m)", needed=("mask",))
    except Drift:
        return
    assert out == "layer(h, m)"
