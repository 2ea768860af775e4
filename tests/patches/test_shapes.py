"""The shared vocabulary: one statement per line for the units a codemod targets."""

from __future__ import annotations

import textwrap

import libcst as cst
import pytest
from codemod_cases import same_ast

from patches import _layout as lay
from patches import _shapes as s

LAID_OUT = """\
import torch


class GemmaModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.norm = GemmaRMSNorm(config.hidden_size)  # the norm
        if config.x:
            self.x = 1
        else:
            self.x = 2

    def forward(self, x):
        return self.norm(x)


def helper(x):
    return x
"""


def parse(source: str) -> cst.Module:
    return cst.parse_module(textwrap.dedent(source))


def test_laid_out_code_is_not_compact_and_comes_back_as_the_same_object() -> None:
    module = parse(LAID_OUT)
    assert not lay.is_compact(module.body)
    assert lay.split_lines(module.body[1]) is module.body[1]
    assert lay.split_targets(module, ["GemmaModel.__init__", "helper", "<imports>"]) is module


@pytest.mark.parametrize(
    "compact",
    [
        pytest.param("x = 1; y = 2\n", id="joined"),
        pytest.param("if a: x = 1\n", id="one-line-if"),
        pytest.param("if a:\n    pass\nelse: x = 1\n", id="one-line-else"),
        pytest.param("def f(): return 1\n", id="one-line-def"),
        pytest.param("try:\n    pass\nexcept E: x = 1\n", id="one-line-handler"),
        pytest.param("for i in x:\n    if i:\n        a = 1; b = 2\n", id="nested"),
        pytest.param("class A: x = 1\n", id="one-line-class"),
    ],
)
def test_compact_forms(compact: str) -> None:
    module = parse(compact)
    assert lay.is_compact(module.body)
    (stmt,) = module.body
    if isinstance(stmt, cst.SimpleStatementLine):
        split = lay.split_line(stmt)
        assert len(split) == 2
    else:
        split = [lay.split_lines(stmt)]
        assert not lay.is_compact(split)
    code = cst.Module(body=split).code
    assert same_ast(code, compact)


def test_split_line_keeps_comments_with_their_statements() -> None:
    imports, line = parse("import os\n# before\nx = 1; y = 2  # after\n").body
    code = cst.Module(body=[imports, *lay.split_line(line)]).code
    assert code == "import os\n# before\nx = 1\ny = 2  # after\n"


def test_split_targets_lays_out_only_the_targets() -> None:
    compact = LAID_OUT.replace(
        "        super().__init__()\n        self.norm",
        "        super().__init__(); self.norm",
    ).replace("    return x\n", "    y = x; return y\n")
    module = parse(compact)
    split = lay.split_targets(module, ["GemmaModel.__init__"])
    assert "        super().__init__()\n        self.norm = GemmaRMSNorm" in split.code
    assert "    y = x; return y\n" in split.code  # helper is not a target: left as it was
    assert split.body[0] is module.body[0]  # untouched statements are the same objects
    assert same_ast(split.code, compact)


def test_split_targets_separates_a_named_statement_from_its_line() -> None:
    module = parse("logger = get_logger(); GEMMA_CLASSES = {'eager': A}\n")
    split = lay.split_targets(module, ["GEMMA_CLASSES"])
    assert split.code == "logger = get_logger()\nGEMMA_CLASSES = {'eager': A}\n"
    assert s.find(split.body, "GEMMA_CLASSES") == 1


def test_split_targets_reaches_a_member_of_a_one_line_class() -> None:
    module = parse("class Config: a = 1; b = 2\n")
    split = lay.split_targets(module, ["Config.b"])
    assert same_ast(split.code, module.code)
    assert s.find(list(split.body[0].body.body), "b") is not None
