"""Errors a user can meet, each with the exit code of SPEC section 7.

Every failure that is not a bug is one of these: the CLI prints ``str(error)`` as one line
on stderr and exits with ``error.exit_code``.  Anything else is an internal error (exit 1).
"""

from __future__ import annotations


class PatcherError(Exception):
    """Base class: a one-line message naming the problem and, where there is one, the fix."""

    exit_code = 1


class UsageError(PatcherError):
    """Bad usage or input: a malformed version, an unpinned release, a bad directory."""

    exit_code = 2


class DriftError(PatcherError):
    """A codemod met an upstream shape it does not know (see ``patcher.series.engine.Drift``)."""

    exit_code = 3


class UpstreamError(PatcherError):
    """Upstream unavailable (no network, nothing cached) or failing its pin."""

    exit_code = 4


class CheckError(PatcherError):
    """``patcher check`` found outputs that differ from the lock."""

    exit_code = 5
