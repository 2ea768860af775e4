"""The ``patcher`` command line: a thin layer over functions that take paths and return values.

``main(argv) -> int`` never raises for a user's mistake: a ``PatcherError`` becomes one line
on stderr and its exit code (SPEC §7); anything else is an internal error (exit 1), with the
traceback only under ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from patcher import __version__
from patcher.deploy.write import default_out_dir, write_output
from patcher.errors import PatcherError, UsageError
from patcher.progress import say
from patcher.series.reuse import generate_cached
from patcher.upstream import pins, versions
from patcher.upstream.families import FAMILIES
from patcher.upstream.resolve import family_of, upstream_for

# The engine (libcst) is imported inside the commands that run it: `apply` on a cached
# output, `pin` and `--help` never pay for it.

EPILOG = """\
SPEC is a release: 4.40 (the newest pinned 4.40.x), 4.40.1 (exact), or `installed` (the
transformers installed beside patcher, read from disk).

exit codes: 0 done; 1 internal error; 2 bad usage or input; 3 drift (a codemod met an
upstream shape it does not know); 4 upstream unavailable or failing its pin; 5 check found
a difference (verify --dir: a hand-edited file); 6 update: a new release fails
verification; 7 verify: the toolchain refuses the release.
"""


# -- commands --------------------------------------------------------------------------------
def cmd_apply(args: argparse.Namespace) -> int:
    if args.out is not None and not args.out.strip():
        raise UsageError("--out is empty; give the output directory, or leave --out out for the default")
    up = upstream_for(args.transformers, args=args)
    output = generate_cached(up, args.codemod)
    out_dir = Path(args.out) if args.out is not None else default_out_dir(up)
    write_output(output.files, out_dir, force=args.force)
    if args.json:
        print(
            json.dumps(
                {
                    "release": up.version,
                    "origin": up.origin,
                    "upstream": {
                        up.family.modeling: up.modeling_sha256,
                        up.family.configuration: up.configuration_sha256,
                    },
                    "out": str(out_dir),
                    "files": output.digests(),
                    "codemods": [
                        {
                            "name": r.codemod,
                            "file": r.file,
                            "shapes": list(r.shapes),
                            "added": r.added,
                            "removed": r.removed,
                        }
                        for r in output.reports
                    ],
                },
                indent=2,
            )
        )
        return 0
    width = max(len(r.codemod) for r in output.reports)
    shapes = max(len(", ".join(r.shapes)) for r in output.reports)
    for r in output.reports:
        print(f"{r.codemod:<{width}}  {', '.join(r.shapes):<{shapes}}  +{r.added} -{r.removed}")
    print(f"wrote {', '.join(output.files)} to {out_dir}/")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from patcher.series import diffing, engine
    from patcher.series.notice import notice

    up = upstream_for(args.transformers, args=args)
    fam = up.family
    series = engine.load_series(model=fam)
    if args.codemod:
        engine.select(series, [args.codemod])  # validates the name
    diffs = []
    for file, source, sha in (
        (fam.modeling, up.modeling, up.modeling_sha256),
        (fam.configuration, up.configuration, up.configuration_sha256),
    ):
        names = [c.NAME for c in series if c.FILE == fam.to_canonical(file)]
        diffs.append(
            diffing.attributed_diff(source, series, file=file, notice=notice(up, file, sha, names), model=fam)
        )
    if args.stat:
        rows = diffing.stat(diffs, [c.NAME for c in series], args.codemod)
        width = max(len(r.name) for r in rows) if rows else 0
        for row in rows:
            print(row.line(width))
        return 0
    sys.stdout.write("".join(diffing.render(d, args.codemod) for d in diffs))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from patcher.series import engine

    fam = family_of(args.model)
    series = engine.load_series(model=fam)
    if args.json:
        print(
            json.dumps(
                {
                    "codemods": [
                        {
                            "name": c.NAME,
                            "description": fam.from_canonical(c.DESCRIPTION),
                            "targets": [fam.from_canonical(t) for t in c.TARGETS],
                            "file": fam.from_canonical(c.FILE),
                            "shapes": list(c.SHAPES),
                        }
                        for c in series
                    ]
                },
                indent=2,
            )
        )
        return 0
    width = max(len(c.NAME) for c in series)
    for i, c in enumerate(series, 1):
        print(f"{i:>2}. {c.NAME:<{width}}  {fam.from_canonical(c.DESCRIPTION)}")
        print(f"    {'':<{width}}  targets: {fam.from_canonical(', '.join(c.TARGETS))}")
    return 0


def cmd_pin(args: argparse.Namespace) -> int:
    if args.latest == bool(args.versions):
        raise UsageError("give release versions to pin, or --latest (not both)")
    fam = family_of(args.model)
    wanted = (
        [pins.latest_release()] if args.latest else [versions.check_release(v, fam) for v in args.versions]
    )
    pins.check_writable(model=fam)  # before any download
    for version in wanted:
        say(f"pinning transformers {version} ...")
        pin = pins.pin_release(version, model=fam)
        print(f"pinned {pin.version}: {pin.wheel} {fam.modeling} {pin.files[fam.modeling][:12]}…")
    return 0


# -- parser ----------------------------------------------------------------------------------
#: Modules adding more commands: each has ``register(command)``, where ``command(name, func,
#: help)`` returns the new sub-parser.  They must be cheap to import (no libcst at import).
COMMAND_MODULES: tuple[str, ...] = (
    "patcher.ci.matrix",
    "patcher.verify.command",
    "patcher.deploy.install",
    "patcher.ci.check",
    "patcher.ci.review",
    "patcher.ci.update",
)


class _Parser(argparse.ArgumentParser):
    """argparse with a usage mistake reported as one line (SPEC §9), still exit code 2."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("patcher").strip()
        say(f"patcher: {command + ': ' if command else ''}{message} (see `{self.prog} --help`)")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="patcher",
        description="Regenerate and verify the vacc Gemma files (modeling_gemma_vacc.py, "
        "configuration_gemma_vacc.py, quantization_vacc.py) for any transformers release "
        "from 4.38.0 on, by applying the codemod series of patches/ to the pinned upstream files.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"patcher {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, func: Callable, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help,
            description=help,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=func)
        p.add_argument(
            "--model",
            choices=sorted(FAMILIES),
            default="gemma",
            help="the model family (default: gemma; mistral: modeling_mistral_vacc.py, ...)",
        )
        return p

    p = command("apply", cmd_apply, "write the three vacc files for one release")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--transformers", metavar="SPEC", help="the release (see below)")
    source.add_argument("--upstream", metavar="FILE", help="a local modeling_gemma.py instead (unpinned)")
    p.add_argument(
        "--config-upstream",
        metavar="FILE",
        help="with --upstream: its configuration_gemma.py (default: the one beside --upstream FILE)",
    )
    p.add_argument("--out", metavar="DIR", help="output directory (default build/transformers-<version>/)")
    p.add_argument(
        "--codemod",
        action="append",
        metavar="NAME",
        help="run only this codemod (repeatable; series order is kept)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON report instead of text")
    p.add_argument(
        "--force", action="store_true", help="overwrite a directory holding files patcher did not write"
    )

    p = command("diff", cmd_diff, "show upstream -> output as a unified diff, hunks labelled by codemod")
    p.add_argument("--transformers", required=True, metavar="SPEC", help="the release (see below)")
    p.add_argument("--codemod", metavar="NAME", help="only the hunks this codemod owns")
    p.add_argument("--stat", action="store_true", help="hunks and lines changed per codemod")

    p = command("list", cmd_list, "list the codemods of the series, in order, with their targets")
    p.add_argument(
        "--json", action="store_true", help="print JSON: {codemods: [{name, description, targets}]}"
    )

    p = command(
        "pin", cmd_pin, "pin releases: record their wheel and upstream file digests in upstream_pins/"
    )
    p.add_argument("versions", nargs="*", metavar="VERSION", help="exact releases, e.g. 4.40.2")
    p.add_argument("--latest", action="store_true", help="pin the newest release on the package index")

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version exit 0, usage errors exit 2
        return int(exc.code or 0)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args)
    except PatcherError as exc:
        lines = str(exc).splitlines() or [type(exc).__name__]
        for line in lines:
            say(f"patcher: {line}")
        return exc.exit_code
    except KeyboardInterrupt:
        say("patcher: interrupted")
        return 130
    except BrokenPipeError:  # the reader went away (`patcher diff | head`): not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a bug: say so in one line unless asked for the traceback
        if args.debug:
            traceback.print_exc()
        else:
            say(
                f"patcher: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)"
            )
        return 1
