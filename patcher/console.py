"""The ``patcher`` console script and ``python -m patcher``: ``main`` with the process around it.

Kept apart from :mod:`patcher.cli` and importing nothing at first, so that Ctrl-C while the
command modules load (which takes a noticeable moment) still ends with one line and exit code
130, like Ctrl-C during a command; and so that printing can never fail after the work is
done: a terminal that cannot show a character (``PYTHONIOENCODING=ascii`` and a non-ASCII
``--out``) gets an escape sequence instead of an exception.
"""

from __future__ import annotations

import os
import signal
import sys

INTERRUPTED = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C


def tolerant_streams() -> None:
    """Make stdout and stderr write ``\\xe9``-style escapes for what their encoding lacks."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):
                pass  # a stream that cannot be changed (closed, or not text): leave it


def interrupted() -> int:
    """Say once that the command was interrupted; a second Ctrl-C meanwhile is ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        print("patcher: interrupted", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass
    return INTERRUPTED


def exit_now(code: int) -> None:
    """End the process at once with ``code``, its output flushed.

    Used after Ctrl-C, once the work is stopped and worker processes ended: the normal
    interpreter exit can then end ``python -m patcher`` by SIGINT itself (seen with CPython
    3.11) instead of with the exit code, and it waits for threads that are no longer needed.
    """
    warm = sys.modules.get("patcher.verify.warm")  # loaded only if checks were run
    if warm is not None:  # its check servers must not outlive patcher (no atexit after _exit)
        warm.POOL.interrupt()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def entry() -> None:
    """Console-script entry point."""
    tolerant_streams()
    try:
        from patcher.cli import main

        code = main()
    except KeyboardInterrupt:
        code = interrupted()
    if code == INTERRUPTED:
        exit_now(code)
    sys.exit(code)
