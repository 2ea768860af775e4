"""The drift playbook of the README, rehearsed on a synthetic next release.

transformers "5.25.0" is served by a fake index (``tests/next_release.py``): the real 5.24.0
upstream files with one unit reshaped, ``GemmaModel.__init__`` without its
``self.post_init()``, so that ``strided-slice`` drifts.  The test runs every command the
playbook names, in its order, in this process (``main(argv)``, and the mutation benchmark's
own ``main``) against a temporary pins directory and cache:

1. ``patcher update`` reports the drift (exit 3) and pins nothing;
2. ``patcher pin 5.25.0`` pins it to work on it;
3. ``patcher matrix`` shows which codemod met a shape it does not know;
4. the drift line (``patcher apply --transformers 5.25.0``) says where;
5. the maintainer teaches the codemod the shape with a before/after test.  This is the one
   step the test cannot do as a maintainer does (it would edit ``patches/strided_slice.py``):
   it stands in for that edit by wrapping ``StridedSlice.rewrite`` for the duration of the
   test (:func:`teach_init_end`), and runs the before/after pair the maintainer would add;
6. ``python benchmarks/bench_mutation.py --files 5.25.0`` (a sample: the full file takes
   minutes) finds no mutant dropped;
7. ``patcher verify --upstream FILE --transformers 5.24.0`` and ``patcher verify
   --transformers 5.25.0``: here the check process is replaced by a fake (5.25.0 has no
   environment: it is not on the real index); the test marked ``verify`` runs the first one
   for real in 5.24.0's environment;
8. ``patcher lock`` and ``patcher check``.
"""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import sys
from pathlib import Path

import libcst as cst
import mutants
import pytest
from next_release import BASE, POST_INIT, Index, without_post_init

from patcher.cli import main
from patcher.series import lockfile
from patcher.verify import envs, release
from patcher.verify.release import CHECK_NAMES, CONFIGS, CheckResult, VerifyReport
from patches import _layout as lay
from patches import _shapes as s
from patches._base import Drift
from patches.strided_slice import StridedSlice

ROOT = Path(__file__).resolve().parent.parent
NEXT = "5.25.0"
NO_POST_INIT = "no top-level `self.post_init()` call in __init__"
MARKER = cst.parse_statement("self.post_init()\n")


def teach_init_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-in for the maintainer's edit of ``patches/strided_slice.py``: a new shape
    ``init-end`` (``GemmaModel.__init__`` without ``self.post_init()``: the config reads go at
    the end of ``__init__``), built on the codemod's own ``post-init`` logic by lending it a
    ``self.post_init()`` to anchor on and taking that away again."""
    original = StridedSlice.rewrite

    def rewrite(self: StridedSlice, module: cst.Module) -> cst.Module:
        try:
            return original(self, module)
        except Drift as drift:
            if drift.found != NO_POST_INIT:
                raise
        i, cls = s.find_class(module, "GemmaModel")
        j, init = s.find_method(cls, "__init__")
        lent = lay.with_fn_body(init, [*s.fn_body(init), MARKER])
        module = module.with_changes(
            body=lay.replace_in(
                module.body, i, lay.with_class_body(cls, lay.replace_in(s.class_body(cls), j, lent))
            )
        )
        module = original(self, module)
        i, cls = s.find_class(module, "GemmaModel")
        j, init = s.find_method(cls, "__init__")
        body = s.fn_body(init)
        assert s.same_code(body[-1], MARKER)
        done = lay.with_fn_body(init, body[:-1])
        self._shapes[:] = ["init-end" if shape == "post-init" else shape for shape in self._shapes]
        return module.with_changes(
            body=lay.replace_in(
                module.body, i, lay.with_class_body(cls, lay.replace_in(s.class_body(cls), j, done))
            )
        )

    monkeypatch.setattr(StridedSlice, "rewrite", rewrite)
    monkeypatch.setattr(
        StridedSlice,
        "SHAPES",
        {**StridedSlice.SHAPES, "init-end": "__init__ without self.post_init(): the config reads at its end"},
    )


# The before/after pair a maintainer adds to tests/patches/test_strided_slice.py with the shape.
BEFORE = """\
class GemmaModel(GemmaPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.norm = GemmaRMSNorm(config.hidden_size)

    def forward(self, input_ids):
        hidden_states = self.embed_tokens(input_ids)
        hidden_states = self.norm(hidden_states)
        return hidden_states
"""
AFTER = """\
class GemmaModel(GemmaPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.norm = GemmaRMSNorm(config.hidden_size)

        # vacc strided_slice: the prefill graph (insert_slice set, iter_num 0) keeps the last position only
        self.iter_num = getattr(config, "iter_num", 0)
        self.insert_slice = getattr(config, "insert_slice", 0)

    def forward(self, input_ids):
        hidden_states = self.embed_tokens(input_ids)
        hidden_states = self.norm(hidden_states)
        if self.insert_slice and self.iter_num == 0:
            hidden_states = hidden_states[:, -1:, :]
        return hidden_states
"""


def passing(version: str, overlay=None) -> VerifyReport:
    checks = [CheckResult(name, config, "pass", "ok") for name in CHECK_NAMES for config in CONFIGS]
    return VerifyReport(version, checks, overlay=overlay)


@pytest.fixture
def rehearsal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The fake index serving NEXT (5.24.0 reshaped), and the reshaped file on disk as a
    maintainer has it (with the configuration beside it) for ``--upstream``."""
    from releases import fetch

    base = fetch(BASE)
    real_envs = envs.envs_dir()  # before the cache moves to tmp_path
    index = Index(tmp_path, monkeypatch, base.modeling, base.configuration)
    monkeypatch.setenv("PATCHER_OUTPUT_CACHE", "0")  # the codemod changes during the test
    reshaped = without_post_init(base.modeling)
    index.publish(NEXT, reshaped)
    local = tmp_path / "next"
    local.mkdir()
    (local / "modeling_gemma.py").write_text(reshaped, encoding="utf-8", newline="")
    (local / "configuration_gemma.py").write_text(base.configuration, encoding="utf-8", newline="")
    monkeypatch.chdir(tmp_path)
    return {"index": index, "file": local / "modeling_gemma.py", "real_envs": real_envs}


def call(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def bench_mutation(monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    """``python benchmarks/bench_mutation.py ARGS``, run in this process (so that it sees the
    taught codemod), its stdout returned."""
    monkeypatch.setattr(sys, "argv", ["bench_mutation.py", *args])
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script prepends the repository
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        runpy.run_path(str(ROOT / "benchmarks" / "bench_mutation.py"), run_name="__main__")
    assert done.value.code == 0
    return out.getvalue()


@pytest.mark.network
def test_the_drift_playbook(rehearsal, monkeypatch, capsys):
    index: Index = rehearsal["index"]
    lines = rehearsal["file"].read_text().splitlines()
    model = lines.index(next(line for line in lines if line.startswith("class GemmaModel(")))
    init_line = 1 + next(n for n in range(model, len(lines)) if lines[n].startswith("    def __init__("))
    target = f"target GemmaModel.__init__ at modeling_gemma.py:{init_line}"
    where = f"drift: codemod strided-slice, {target}: {NO_POST_INIT}"

    # 1. update reports the drift, pins and locks nothing
    before = index.state()
    code, out, _ = call(capsys, "update")
    assert code == 3
    assert f"{NEXT}  drift               strided-slice; not pinned, not locked" in out
    assert f"    {where}" in out
    assert index.state() == before

    # 2. pin it to work on it
    code, out, _ = call(capsys, "pin", NEXT)
    assert code == 0 and out.startswith(f"pinned {NEXT}: transformers-{NEXT}-py3-none-any.whl")

    # 3. matrix: which codemod met a shape it does not know (the others met 5.24.0's shapes)
    code, out, _ = call(capsys, "matrix", "--json")
    assert code == 0
    rows = {r["version"]: r["codemods"] for r in json.loads(out)["releases"]}
    drifting = {name for name, cell in rows[NEXT].items() if "drift" in cell}
    assert drifting == {"strided-slice"}
    assert rows[NEXT]["strided-slice"]["drift"].startswith(where)
    assert {n: c for n, c in rows[NEXT].items() if n not in drifting} == {
        n: c for n, c in rows[BASE].items() if n not in drifting
    }
    code, out, _ = call(capsys, "matrix")
    (row,) = [line for line in out.splitlines() if line.startswith(NEXT)]
    assert row.split()[1 + 8] == "DRIFT"  # release, modeling, then column 8: strided-slice

    # 4. the drift line says where, as apply prints it
    code, _, err = call(capsys, "apply", "--transformers", NEXT, "--out", "build/next")
    assert code == 3 and err.startswith(f"patcher: {where}")
    assert not Path("build/next").exists()

    # 5. teach the codemod the shape (stand-in for the edit), with its before/after test
    teach_init_end(monkeypatch)
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "patches"))
    from codemod_cases import assert_codemod, assert_idempotent, assert_noop

    assert_codemod(StridedSlice, BEFORE, AFTER, ("init-end",))
    assert_noop(StridedSlice, AFTER, ("sliced",))
    assert_idempotent(StridedSlice, BEFORE)
    code, out, _ = call(capsys, "matrix", "--json")
    rows = {r["version"]: r["codemods"] for r in json.loads(out)["releases"]}
    assert rows[NEXT]["strided-slice"] == {"shapes": ["init-end"]}
    assert rows[BASE]["strided-slice"] == {"shapes": ["post-init"]}

    # 6. the mutation tier on the new file (a sample here; the playbook runs all of it)
    report = bench_mutation(monkeypatch, "--files", NEXT, "--sample", "6", "--jobs", "1")
    (row,) = [line.split() for line in report.splitlines() if line.startswith(f"{NEXT} ")]
    counts = dict(zip(("mutants", *mutants.OUTCOMES), map(int, row[1:8]), strict=True))
    assert counts["mutants"] == 6
    assert counts["dropped"] == counts["error"] == 0, report

    # 7. verify: the local file in 5.24.0's environment, and the pinned release itself
    seen = []

    def verify_output(version, out_dir, *, overlay=None, **kw):
        text = (Path(out_dir) / "modeling_gemma_vacc.py").read_text()
        seen.append((version, overlay.modeling_path if overlay else None, text))
        return passing(version, overlay)

    monkeypatch.setattr(release, "verify_output", verify_output)
    assert call(capsys, "verify", "--upstream", str(rehearsal["file"]), "--transformers", BASE)[0] == 0
    assert call(capsys, "verify", "--transformers", NEXT)[0] == 0
    assert [(v, o) for v, o, _ in seen] == [(BASE, str(rehearsal["file"])), (NEXT, None)]
    for _, _, text in seen:
        assert 'self.insert_slice = getattr(config, "insert_slice", 0)' in text
        assert "hidden_states = hidden_states[:, -1:, :]" in text

    # 8. lock, and check agrees; 5.24.0's entry is as it was
    code, out, _ = call(capsys, "lock")
    assert code == 0 and "2 releases (2 generate, 0 drift)" in out
    locked = lockfile.read_lock(index.lock)
    assert locked.releases[BASE] == index.base_entry and locked.releases[NEXT].outputs
    code, out, _ = call(capsys, "check")
    assert code == 0 and "all 2 pinned releases match" in out


@pytest.mark.verify
@pytest.mark.network
def test_the_taught_shape_verifies_for_real(rehearsal, monkeypatch, capsys):
    """Step 7 for real: the reshaped file, through the taught codemod, verified against itself
    in 5.24.0's own environment (the user cache's environments, linked into the tmp cache)."""
    cache = rehearsal["index"].cache
    cache.mkdir(exist_ok=True)
    (cache / "envs").symlink_to(rehearsal["real_envs"], target_is_directory=True)
    (cache / "uv").symlink_to(rehearsal["real_envs"].parent / "uv", target_is_directory=True)
    teach_init_end(monkeypatch)
    code, out, err = call(
        capsys, "verify", "--upstream", str(rehearsal["file"]), "--transformers", BASE, "--json"
    )
    report = json.loads(out)
    failed = [(c["name"], c["config"], c["detail"]) for c in report["checks"] if c["status"] == "fail"]
    assert code == 0 and report["ok"], (failed, err[-2000:])
    assert report["reference"].startswith(f"local upstream {rehearsal['file']}")
    assert POST_INIT not in rehearsal["file"].read_text().split("class GemmaModel(")[1].split("\nclass ")[0]
