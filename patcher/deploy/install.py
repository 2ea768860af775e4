"""``patcher install``: the vacc files and the ``auto_map`` into a checkpoint directory.

The work is :func:`patcher.deploy.checkpoint.install`; this module resolves the release, gets its
output (reused from the output cache when possible) and reports what changed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from patcher.deploy import checkpoint, write
from patcher.errors import UsageError
from patcher.progress import say
from patcher.series import contract, reuse
from patcher.series.contract import NOTICE_MARK
from patcher.upstream import resolve


def cmd_install(args: argparse.Namespace) -> int:
    if not args.weights.strip():
        raise UsageError("--weights is empty; give the checkpoint directory")
    weights = Path(args.weights)
    try:
        # refuse a directory that cannot take the files before generating anything
        fam = resolve.family_of(getattr(args, "model", None))
        auto_map = checkpoint.auto_map_for(fam.name, fam.prefix)
        config = checkpoint.read_config(weights)
        checkpoint.check_model_type(config, force=args.force, expected=fam.name)
        checkpoint.with_auto_map(config, auto_map, force=args.force)
        up = resolve.upstream_for(args.transformers, model=fam.name)  # late-bound, like reuse.generate_cached
        output = reuse.generate_cached(up)
        before = _installed_release(weights, fam.output_names[fam.modeling])
        done = checkpoint.install(
            weights,
            output.files,
            force=args.force,
            mark=NOTICE_MARK,
            known=write.LEGACY_COMPANIONS,
            auto_map=auto_map,
            model_type=fam.name,
        )
    except checkpoint.CheckpointError as exc:
        raise UsageError(str(exc)) from None
    if done.changed and before not in (None, up.version):
        say(f"replaced the vacc files of transformers {before} with those of {up.version}")
    saved = _saved_with(config)
    if saved is not None and saved != up.version:
        say(
            f"warning: {weights / 'config.json'} says transformers_version {saved}, the vacc files are "
            f"of {up.version}; load this checkpoint with transformers {up.version}, or install "
            f"--transformers {saved} instead"
        )
    if not done.changed:
        print(f"{weights}: already holds the vacc files of transformers {up.version}; nothing changed")
        return 0
    for name in done.written:
        print(f"wrote {weights / name}")
    if done.backup:
        say(f"kept the original config.json as {done.backup}")
    return 0


def _installed_release(weights: Path, name: str = contract.OUTPUT_NAMES[contract.MODELING]) -> str | None:
    """The release named by the notice of the vacc modeling file already in ``weights``."""
    try:
        text = (weights / name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return contract.notice_release(text[:4096])


def _saved_with(config: str) -> str | None:
    """``transformers_version`` of a checkpoint's config.json (None when absent or unreadable)."""
    try:
        value = json.loads(config).get("transformers_version")
    except (ValueError, RecursionError, AttributeError):
        return None
    return value if isinstance(value, str) and value.strip() else None


def register(command) -> None:
    p = command(
        "install",
        cmd_install,
        "write the vacc files into a checkpoint directory and add their auto_map to its config.json",
    )
    p.add_argument("--transformers", required=True, metavar="SPEC", help="the release (see below)")
    p.add_argument(
        "--weights", required=True, metavar="DIR", help="the checkpoint directory (with config.json)"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace same-named files patcher did not write, and an auto_map pointing elsewhere",
    )
