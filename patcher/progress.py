"""What commands tell the user on stderr: one-line messages, and progress of long commands
(a live bar on a terminal, nothing in pipes and logs).

:func:`say` prints one line on stderr (the CLI's messages, and every command's progress).

Commands report steps as text (``[3/40] 4.45.0: ok``, the form ``batch`` and ``regen``
print); :class:`Bars` turns the ``[i/n]`` of each named stream into a rich progress bar on
stderr when stderr is a terminal, and does nothing otherwise, so that captured output stays
exactly what the command prints.
"""

from __future__ import annotations

import re
import sys
from types import TracebackType


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


STEP = re.compile(r"\[(\d+)/(\d+)\]\s*(.*)")


def parse_step(line: str) -> tuple[int, int, str] | None:
    """``(done, total, what)`` of a ``[i/n] what`` progress line, else None."""
    hit = STEP.search(line)
    return (int(hit.group(1)), int(hit.group(2)), hit.group(3).strip()) if hit else None


class Bars:
    """One bar per stream name, updated from progress lines; live only on a terminal."""

    def __init__(self, title: str, *, live: bool | None = None) -> None:
        self.title = title
        self.live = sys.stderr.isatty() if live is None else live
        self._progress = None
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> Bars:
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[what]}"),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.start()
        return self

    def step(self, name: str, line: str) -> None:
        """Take one progress line of stream ``name`` (lines without ``[i/n]`` are ignored)."""
        found = parse_step(line)
        if found is None or self._progress is None:
            return
        done, total, what = found
        if name not in self._tasks:
            self._tasks[name] = self._progress.add_task(f"{self.title} {name}", total=total, what="")
        self._progress.update(self._tasks[name], completed=done, total=total, what=what)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
