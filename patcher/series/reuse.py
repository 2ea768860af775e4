"""Reusing outputs: the output cache, keyed by everything an output is a function of.

This module imports no libcst on purpose.  An output depends only on the upstream files,
the codemod sources and the notice (SPEC §8), so it is cached content-addressed under that
key; ``patcher apply`` on a cached output never loads the engine, which is what keeps it
within a small multiple of ``python -c "import libcst"``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

from patcher.errors import PatcherError
from patcher.series.contract import ALL_OUTPUT_FILES, Output, Report, output_digest
from patcher.upstream.cache import BlobCache, cache_root, is_sha256
from patcher.upstream.fetch import Upstream


# -- reuse -----------------------------------------------------------------------------------
def output_key(upstream: Upstream, codemods: list[str] | None) -> str:
    """The key of an output: everything it is a function of."""
    parts = {
        "series": output_digest(),
        "codemods": codemods,
        "version": upstream.version,
        "origin": upstream.origin if upstream.version is None else None,
        "modeling": upstream.modeling_sha256,
        "configuration": upstream.configuration_sha256,
    }
    if upstream.model != "gemma":  # gemma's keys stay what they were
        parts["model"] = upstream.model
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class OutputCache:
    """Generated outputs by key: a small JSON record per key, the files as blobs.

    A record is only trusted for the key it says it was written for: each names its own key,
    file names and blob digests, and a record that does not (damaged, from an older patcher,
    or another release's record copied over this one) is a miss, regenerated and rewritten.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or cache_root()) / "outputs"
        self.blobs = BlobCache(root)

    def get(self, key: str, upstream: Upstream) -> Output | None:
        try:
            record = json.loads((self.root / f"{key}.json").read_text(encoding="utf-8"))
            if not _valid_record(record, key):
                return None
            files = {}
            for name, sha in record["files"].items():
                data = self.blobs.get(sha)  # checked against its digest; damaged -> None
                if data is None:
                    return None
                files[name] = data.decode("utf-8")
            reports = [
                Report(r["codemod"], r["file"], tuple(r["shapes"]), r["added"], r["removed"])
                for r in record["reports"]
            ]
        except (OSError, ValueError, KeyError, TypeError, RecursionError, PatcherError):
            return None
        return Output(upstream, files, reports)

    def put(self, key: str, output: Output) -> None:
        tmp = None
        try:
            files = {name: self.blobs.put(text.encode("utf-8")) for name, text in output.files.items()}
            record = {"key": key, "files": files, "reports": [asdict(r) for r in output.reports]}
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".manifest-")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(record, handle, indent=1, sort_keys=True)
            os.replace(tmp, self.root / f"{key}.json")
        except (OSError, PatcherError):
            # the cache is an optimisation (a shared read-only cache is normal in CI):
            # failing to fill it must not fail the command
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)


def _valid_record(record: object, key: str) -> bool:
    """Whether an output-cache record is one for ``key``: its own key, known file names, and
    sha256 digests (they become blob paths)."""
    return (
        isinstance(record, dict)
        and record.get("key") == key
        and isinstance(record.get("files"), dict)
        and all(name in ALL_OUTPUT_FILES and is_sha256(sha) for name, sha in record["files"].items())
        and isinstance(record.get("reports"), list)
    )


def generate_cached(upstream: Upstream, codemods: list[str] | None = None) -> Output:
    """The output for ``upstream`` (optionally only the named codemods), reused when an
    identical generation is cached; the engine is imported only when it has to run."""
    key = output_key(upstream, codemods)
    cache = OutputCache()
    reuse = os.environ.get("PATCHER_OUTPUT_CACHE", "1") != "0"
    output = cache.get(key, upstream) if reuse else None
    if output is None:
        from patcher.series import engine
        from patcher.series.generate import generate

        output = generate(upstream, engine.select(engine.load_series(model=upstream.model), codemods))
        cache.put(key, output)
    return output
