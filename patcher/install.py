"""``patcher install``: the vacc files and the ``auto_map`` into a checkpoint directory.

The work is :func:`patcher.checkpoint.install`; this module resolves the release, gets its
output (reused from the output cache when possible) and reports what changed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from patcher import checkpoint, outputs
from patcher.cli import say, upstream_for
from patcher.errors import UsageError
from patcher.outputs import NOTICE_MARK


def cmd_install(args: argparse.Namespace) -> int:
    if not args.weights.strip():
        raise UsageError("--weights is empty; give the checkpoint directory")
    weights = Path(args.weights)
    try:
        # refuse a directory that cannot take the files before generating anything
        config = checkpoint.read_config(weights)
        checkpoint.check_model_type(config, force=args.force)
        checkpoint.with_auto_map(config, force=args.force)
        up = upstream_for(args.transformers)
        output = outputs.generate_cached(up)
        done = checkpoint.install(
            weights, output.files, force=args.force, mark=NOTICE_MARK, known=outputs.LEGACY_COMPANIONS
        )
    except checkpoint.CheckpointError as exc:
        raise UsageError(str(exc)) from None
    if not done.changed:
        print(f"{weights}: already holds the vacc files of transformers {up.version}; nothing changed")
        return 0
    for name in done.written:
        print(f"wrote {weights / name}")
    if done.backup:
        say(f"kept the original config.json as {done.backup}")
    return 0


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
