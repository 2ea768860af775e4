"""The mutation tier: a semantic change of upstream inside a unit a codemod rewrites must reach
the output or stop the run with a drift error, never vanish (SPEC §5, "loses nothing").

Three parts (the generator and classifier are ``tests/mutants.py``):

* the generator and classifier on a tiny synthetic module and toy codemods — these hold
  whatever the real codemods do;
* the default run: a fixed-seed sample of mutants (every kind) of three upstream files
  spanning the eras (4.40, 4.48, 5.24), none of which may be ``dropped`` or ``error``;
* the full tier (marker ``mutation``): every mutant of every distinct upstream file, one test
  per file.  26,162 mutants at about 0.44 s of CPU each (one series run on the file parsed
  once, ``mutants.Spliced``) is about 3.2 hours of CPU (an hour and a half on 2 free cores),
  so it runs only when asked for: ``python -m pytest -m mutation -n 2`` (or with
  ``PATCHER_MUTATION=1``).  Selecting the marker is the switch
  rather than ``addopts = -m "not mutation"``: a user's own ``-m "not verify"`` would replace
  that expression and start the hours-long tier unasked.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import libcst as cst
import mutants
import pytest
from releases import DISTINCT_SUPPORTED, fetch

from patcher.series import engine
from patches._base import VaccCodemod

SERIES = engine.load_series()

# -- the generator on a synthetic module -----------------------------------------------------
TOY = textwrap.dedent(
    '''\
    """Module docstring: 1 and 2.5 and call() stay."""
    import torch


    def helper(x):
        return x + 1


    def unit_fn(x, scale=2.0):
        """Docstring of unit_fn: 3, 4.5 and f() stay."""
        y = helper(x) * 3
        if y is not None:
            z = torch.relu(y)
        else:
            pass
        a, b = divmod(y, 2)
        y += 1
        if x: w = 1; v = 2
        for i in range(4):
            y = y + i
        print(y)
        with torch.no_grad():
            t = 0.0
        raise ValueError("bad")


    class Unit(Base(8)):
        """Class docstring."""

        attr = 7

        @decorator(5)
        def method(self, x: Annotated[int, 9] = 1):
            """Method docstring."""
            super().__init__()
            self.x = x
            return make(x)(2)


    class Partly:
        def claimed(self):
            return 10

        def unclaimed(self):
            return 11


    MAPPING = {"a": compute(12)}
    '''
)


class _Toy(VaccCodemod):
    """A toy codemod: keeps everything (only its claims matter to the generator)."""

    DESCRIPTION = "toy"
    SHAPES = {"any": "anything"}

    def rewrite(self, module: cst.Module) -> cst.Module:
        self.met("any")
        return module


class ToyA(_Toy):
    NAME = "toy-a"
    TARGETS = ("<imports>", "unit_fn", "Unit", "Unit.<bases>")


class ToyB(_Toy):
    NAME = "toy-b"
    TARGETS = ("Partly.claimed", "MAPPING", "Unit.method", "missing_unit", "Partly.missing")


TOY_SERIES = [ToyA, ToyB]


@functools.cache
def toy_mutants() -> tuple[mutants.Mutant, ...]:
    return tuple(mutants.generate("toy", TOY, TOY_SERIES))


def _by(kind: str) -> list[mutants.Mutant]:
    return [m for m in toy_mutants() if m.kind == kind]


def _whats(kind: str) -> set[str]:
    return {m.what for m in _by(kind)}


def test_every_kind_is_produced() -> None:
    counts = mutants.count_by_kind(toy_mutants())
    assert all(counts[kind] > 0 for kind in mutants.KINDS), counts


def test_every_mutant_is_valid_python_and_changes_the_code() -> None:
    original = ast.dump(ast.parse(TOY))
    for m in toy_mutants():
        source = m.source(check=False)
        tree = ast.parse(source)  # the whole file, not only the top-level statement
        m.check()
        assert ast.dump(tree) != original, m.id


def _docstrings(source: str) -> dict[str, str | None]:
    tree = ast.parse(source)
    found: dict[str, str | None] = {"<module>": ast.get_docstring(tree, clean=False)}

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.ClassDef):
                found[prefix + child.name] = ast.get_docstring(child, clean=False)
                walk(child, prefix + child.name + ".")

    walk(tree, "")
    return found


def test_docstrings_are_never_mutated() -> None:
    before = _docstrings(TOY)
    for m in toy_mutants():
        after = _docstrings(m.source())
        for name, doc in after.items():  # a deleted method takes its docstring along; no other change
            assert doc == before[name], m.id
    assert not any(m.line in (1, 10, 28, 34) for m in toy_mutants())  # the docstrings' lines


def test_only_claimed_units_are_mutated_and_nested_claims_fold_into_the_outer_unit() -> None:
    units = {m.unit for m in toy_mutants()}
    assert units == {"unit_fn", "Unit", "Partly.claimed", "MAPPING"}
    lines = TOY.splitlines()
    for m in toy_mutants():
        assert "helper" not in m.member and "unclaimed" not in m.member
        assert not lines[m.line - 1].startswith(("def helper", "import", '"""Module'))
    method = [m for m in toy_mutants() if m.member == "Unit.method"]
    assert method and all(m.codemods == ("toy-a", "toy-b") for m in method)
    assert all(m.codemods == ("toy-a",) for m in toy_mutants() if m.unit == "unit_fn")
    assert {m.member for m in toy_mutants() if m.unit == "Unit" and m.line == 30} == {"Unit.attr"}


def test_deletions() -> None:
    deleted = _whats("delete")
    for stmt in ("y = helper(x) * 3", "z = torch.relu(y)", "y += 1", "w = 1", "v = 2", "print(y)"):
        assert stmt in deleted
    assert "if y is not None:" in deleted and "for i in range(4):" in deleted
    assert "attr = 7" in deleted and "@decorator(5)" in deleted  # a method, decorator and all
    assert "pass" not in deleted
    only = next(m for m in _by("delete") if m.what == "z = torch.relu(y)")
    assert "    if y is not None:\n        pass\n    else:" in only.source()
    small = next(m for m in _by("delete") if m.what == "w = 1")
    assert "    if x: pass; v = 2\n" in small.source()
    method = next(m for m in _by("delete") if m.what == "@decorator(5)")
    assert "def method" not in method.source() and "decorator" not in method.source()
    assert not any(m.unit == "MAPPING" for m in _by("delete"))  # the unit itself is never deleted


def test_rebinds_take_turns_and_cover_tuple_augmented_and_one_line_assignments() -> None:
    rebinds = [m for m in toy_mutants() if m.kind.startswith("rebind-")]
    assert [m.kind for m in rebinds[:3]] == ["rebind-scale", "rebind-tanh", "rebind-shift"]
    whats = {m.what for m in rebinds}
    assert {"y = y * 1.5", "z = torch.tanh(z)", "a = a + 0.5"} <= whats  # a, b = ...: first element
    assert any(m.what.startswith("self.x = ") for m in rebinds)
    assert any(m.what.startswith("attr = ") for m in rebinds)
    one_line = next(m for m in rebinds if m.what.startswith("w = "))
    assert f"    if x: w = 1; {one_line.what}; v = 2\n" in one_line.source()
    after = next(m for m in rebinds if m.what == "y = y * 1.5")
    assert "    y = helper(x) * 3\n    y = y * 1.5\n    if y" in after.source()
    assert not any(m.unit == "MAPPING" for m in rebinds)


def test_call_scaling_skips_decorators_super_called_calls_with_raise_and_discarded_results() -> None:
    scaled = _whats("call-scale")
    assert {"helper(...)*1.5", "torch.relu(...)*1.5", "divmod(...)*1.5", "range(...)*1.5"} <= scaled
    assert {"make(x)(...)*1.5", "compute(...)*1.5"} <= scaled  # the outer call; the mapping unit
    skipped = {"decorator", "super", "print", "torch.no_grad", "ValueError", "Base"}
    assert not {w for w in scaled if w.split("(")[0] in skipped} and "make(...)*1.5" not in scaled, scaled
    m = next(m for m in _by("call-scale") if m.what == "helper(...)*1.5")
    assert "    y = (helper(x) * 1.5) * 3\n" in m.source()


def test_constants() -> None:
    consts = _whats("const")
    assert {"3->4", "2->3", "1->2", "4->5", "0.0->0.5", "7->8", "10->11", "12->13", "2.0->3.0"} <= consts
    lines = {m.line for m in _by("const")}
    assert 27 not in lines and 32 not in lines  # class bases and decorator left alone
    annotated = [m for m in _by("const") if m.line == 33]
    assert [m.what for m in annotated] == ["1->2"]  # the default, not the annotation's 9


def test_ids_are_unique_readable_and_stable() -> None:
    ids = [m.id for m in toy_mutants()]
    assert len(ids) == len(set(ids))
    pattern = re.compile(r"^toy:(unit_fn|Unit|Partly\.claimed|MAPPING):[a-z-]+:L\d+c\d+:.+$")
    assert all(pattern.match(i) for i in ids), ids
    assert [m.id for m in mutants.generate("toy", TOY, TOY_SERIES)] == ids
    script = (
        "import sys; sys.path[:0] = ['.', 'tests']; import test_mutation as t, mutants;"
        "print('\\n'.join(m.id for m in mutants.generate('toy', t.TOY, t.TOY_SERIES)))"
    )
    root = Path(__file__).resolve().parents[1]
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.splitlines() == ids


def test_sample_is_deterministic_covers_every_kind_and_spreads_over_distinct_code() -> None:
    pool = list(toy_mutants())
    one = mutants.sample(pool, 12, seed=3)
    assert [m.id for m in one] == [m.id for m in mutants.sample(pool, 12, seed=3)]
    assert {m.kind for m in one} == set(mutants.KINDS)
    keys: set[str] = set()
    first = mutants.sample(pool, 12, seed=3, exclude_keys=keys)
    again = mutants.sample(pool, 12, seed=3, exclude_keys=keys)
    assert len(keys) == 24 and not {m.key for m in first} & {m.key for m in again}


# -- the classifier with toy codemods --------------------------------------------------------
class Keeper(_Toy):
    """Keeps ``unit_fn`` as it is: every mutant of it is carried."""

    NAME = "keeper"
    TARGETS = ("unit_fn",)


class Templater(_Toy):
    """Replaces ``Unit`` with a template: every mutant of it is dropped."""

    NAME = "templater"
    TARGETS = ("Unit",)

    def rewrite(self, module: cst.Module) -> cst.Module:
        self.met("any")
        template = cst.parse_statement("class Unit:\n    attr = 0\n")
        return module.with_changes(
            body=[template if getattr(s, "name", None) and s.name.value == "Unit" else s for s in module.body]
        )


class Checker(_Toy):
    """Refuses ``Partly.claimed`` unless it returns 10; breaks on ``compute(13)``."""

    NAME = "checker"
    TARGETS = ("Partly.claimed", "MAPPING")

    def rewrite(self, module: cst.Module) -> cst.Module:
        self.met("any")
        if "return 10\n" not in module.code:
            raise self.drift("Partly.claimed", "another return value")
        if "compute(13)" in module.code:
            raise RuntimeError("internal trouble")
        return module


def test_classifier_sorts_refused_carried_dropped_and_error() -> None:
    series = [Keeper, Templater, Checker]
    pool = mutants.generate("toy", TOY, series)
    outcomes = mutants.classify_all(pool, series)
    status = {o.mutant.id: o.status for o in outcomes}
    assert {status[m.id] for m in pool if m.unit == "unit_fn"} == {"carried"}
    assert {status[m.id] for m in pool if m.unit == "Unit"} == {"dropped"}
    method = next(o for o in outcomes if o.mutant.what == "@decorator(5)")  # leaves blank lines behind
    assert method.detail == "the output differs only in layout"
    claimed = [o for o in outcomes if o.mutant.unit == "Partly.claimed"]
    assert {o.status for o in claimed} == {"refused"} and all(o.refused_by == ("checker",) for o in claimed)
    errors = [o for o in outcomes if o.status == "error"]
    assert [o.mutant.what for o in errors] == ["12->13"] and "RuntimeError" in errors[0].detail
    message = mutants.failure_message(outcomes, limit=3)
    dropped = sum(m.unit == "Unit" for m in pool)
    assert f"{dropped} of {len(pool)} mutants dropped; per codemod: templater {dropped}" in message
    assert f"... and {dropped - 3} more" in message
    assert "1 of" in message and "mutants error; per codemod: checker 1" in message
    table = mutants.tally(outcomes)
    assert table["templater"]["dropped"] == dropped and table["keeper"]["carried"] > 0


def test_drift_messages_name_the_refusing_codemods() -> None:
    message = (
        "drift: codemod mask-generation, target GemmaModel.forward at modeling_gemma.py:513: x\n"
        "drift: codemod strided-slice, target GemmaModel.forward at modeling_gemma.py:513: y"
    )
    assert mutants.refusing_codemods(message) == ("mask-generation", "strided-slice")


# -- the real series on real upstream files --------------------------------------------------
#: The default run: these files (one per era: three attention classes, the eager function,
#: 5.x generic heads), this many mutants each (two per kind).  39 series runs at about 1 s of
#: CPU each keep the sample under a minute of CPU; raise it when the series gets faster.
SAMPLE_FILES = ("4.40.0", "4.48.0", "5.24.0")
SAMPLE_PER_FILE = 12
SEED = 20240607


@functools.cache
def real_mutants(version: str) -> tuple[mutants.Mutant, ...]:
    return tuple(mutants.generate(version, fetch(version).modeling, SERIES))


@functools.cache
def default_sample() -> dict[str, list[mutants.Mutant]]:
    """The sample of each file, spread over code not already drawn from an earlier file."""
    keys: set[str] = set()
    return {
        v: mutants.sample(real_mutants(v), SAMPLE_PER_FILE, SEED, exclude_keys=keys) for v in SAMPLE_FILES
    }


@pytest.mark.network
@pytest.mark.parametrize("version", SAMPLE_FILES)
def test_real_mutants_parse_and_stay_in_claimed_units(version: str) -> None:
    claimed = {t for ts in mutants.claims(SERIES).values() for t in ts}
    for m in real_mutants(version):
        m.check()
        assert m.codemods, m.id
        assert any(m.unit == t or t.startswith(m.unit + ".") for t in claimed), m.id
    assert all(n > 0 for n in mutants.count_by_kind(real_mutants(version)).values())


@pytest.mark.network
@pytest.mark.parametrize("version", SAMPLE_FILES)
def test_sampled_mutants_are_refused_or_carried(version: str) -> None:
    sample = default_sample()[version]
    assert {m.kind for m in sample} == set(mutants.KINDS)
    outcomes = mutants.classify_all(sample, SERIES)
    failed = sum(o.status in mutants.FAILURES for o in outcomes)
    assert failed == 0, mutants.failure_message(outcomes)


@pytest.mark.network
@pytest.mark.parametrize("version", SAMPLE_FILES)
def test_top_level_statements_parse_alone_as_in_the_whole_file(version: str) -> None:
    """What ``mutants.Spliced`` rests on: each top-level statement, parsed alone with the
    file's parsing config, is the very tree the whole file's parse has for it."""
    spliced = mutants.Spliced(fetch(version).modeling)
    for (a, b), stmt in zip(spliced.spans, spliced.parsed.body, strict=True):
        alone = cst.parse_statement(spliced.source[a:b], config=spliced.config)
        assert alone.deep_equals(stmt), spliced.source[a:b][:200]


@pytest.mark.network
def test_spliced_mutants_are_the_mutated_files_and_classify_alike() -> None:
    """The spliced module of each sampled mutant renders to the mutated file, and the series
    gives it the outcome the whole-file path gives (same status, same refusing codemods)."""
    version = SAMPLE_FILES[1]
    sample = default_sample()[version]
    source = fetch(version).modeling
    spliced, baseline = mutants.Spliced(source), mutants.baseline(source, SERIES)
    for m in sample:
        module = spliced.module(m)
        assert module is not None and module.code == m.source(), m.id
        slow, fast = mutants.classify(m, SERIES, baseline), mutants.classify(m, SERIES, baseline, spliced)
        assert (fast.status, fast.refused_by) == (slow.status, slow.refused_by), m.id


def test_a_mutant_the_splice_cannot_take_is_classified_from_the_whole_file() -> None:
    """A mutant that a lone statement cannot hold falls back to parsing the whole file: the
    outcome is the same either way."""
    pool = mutants.generate("toy", TOY, [Keeper, Templater, Checker])
    m = next(m for m in pool if m.unit == "unit_fn")
    spliced = mutants.Spliced(TOY)
    # An edit spanning two top-level statements: the splice refuses it.
    wide = dataclasses.replace(
        m, start=spliced.spans[0][0], end=spliced.spans[2][1], text=TOY[: spliced.spans[2][1]]
    )
    assert spliced.module(wide) is None
    series = [Keeper, Templater, Checker]
    base = mutants.baseline(TOY, series)
    assert mutants.classify(m, series, base, spliced).status == mutants.classify(m, series, base).status


#: Mutants the series once dropped silently, as the tier found them: one file per class of
#: defect (a rule that re-added what upstream removed, a loose recognition absorbing a changed
#: statement, a default the rewrite does not carry, a warning dropped without a name).  Each
#: must now be refused, carried, or (the warning) dropped by a named rule.
ONCE_DROPPED = {
    "4.38.0": (
        "4.38.0:GemmaDecoderLayer.forward:delete:L648c8:if use_cache:",
        "4.38.0:GemmaModel.forward:delete:L864c12:if not isinstance(past_key_values, StaticCache):",
        "4.38.0:GemmaModel.forward:call-scale:L864c19:isinstance(...)*1.5",
    ),
    "4.41.0": ("4.41.0:GemmaModel.forward:call-scale:L855c29:isinstance(...)*1.5",),
    # the legacy-cache conversion that past-length does above, deleted whole: only the rule's
    # two comment lines (its own, the warning's inside it) go (found by the full tier)
    "4.42.0": (
        "4.42.0:GemmaModel.forward:delete:L902c8:"
        "if use_cache and not isinstance(past_key_values, Cache): ...",
    ),
    "4.48.3": ("4.48.3:eager_attention_forward:const:L208c21:0.0->0.5",),
    "4.53.0": ("4.53.0:GemmaModel.forward:delete:L438c12:if output_hidden_states:",),
    "4.53.1": ("4.53.1:GemmaForSequenceClassification.forward:delete:L665c12:logger.warning_once(",),
    "5.1.0": ("5.1.0:GemmaForCausalLM.forward:const:L475c45:0->1",),
}


@pytest.mark.network
@pytest.mark.parametrize("version", ONCE_DROPPED)
def test_mutants_once_dropped_are_refused_or_carried(version: str) -> None:
    found = {m.id: m for m in real_mutants(version)}
    chosen = [found[i] for i in ONCE_DROPPED[version]]  # KeyError: the generator changed its ids
    outcomes = mutants.classify_all(chosen, SERIES)
    # a deleted statement that a rule drops, or does above, leaves its comments (dropped-by-rule)
    assert all(o.status in ("refused", "carried", "dropped-by-rule") for o in outcomes), (
        mutants.failure_message(outcomes)
    )


def _full_tier_requested(config: pytest.Config) -> bool:
    return "mutation" in (config.option.markexpr or "") or os.environ.get("PATCHER_MUTATION") == "1"


@pytest.mark.mutation
@pytest.mark.network
@pytest.mark.parametrize("version", DISTINCT_SUPPORTED)
def test_every_mutant_is_refused_or_carried(version: str, request: pytest.FixtureRequest) -> None:
    if not _full_tier_requested(request.config):
        pytest.skip("full mutation tier (hours of CPU): select it with -m mutation or PATCHER_MUTATION=1")
    outcomes = mutants.classify_all(real_mutants(version), SERIES)
    failed = sum(o.status in mutants.FAILURES for o in outcomes)
    assert failed == 0, mutants.failure_message(outcomes)
