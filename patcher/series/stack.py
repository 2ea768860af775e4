"""Deep recursion at any call depth, without CPython's frame-chunk churn.

CPython (3.11 on) keeps a thread's Python frames in a stack of memory chunks, 16 KiB each
unless a frame needs more.  A call that does not fit in the current chunk maps a new one, and
the return from the call that began a chunk unmaps it.  libcst's visitors and code generation
recurse a hundred frames deep and more, down and up again for every node; when a chunk boundary
falls inside that range, every crossing costs an ``mmap`` and an ``munmap``.  Where the
boundaries fall depends on how deep the caller already is: the series on one upstream file ran
in 0.33 s from 10 frames deep and in 0.74 s from 90 (31,000 page faults against 300); from 60
frames deep, pytest's depth, a formatting test took 7 s instead of 4, and three of them made
885,000 ``mmap`` calls where a shallow run made 1,100.  ``patcher`` itself happens to start
the series at a depth that does not churn, which a library caller, a worker process or a test
runner cannot count on.

``roomy(fn, *args, **kwargs)`` calls ``fn`` from a frame whose code asks for a large value
stack (``co_stacksize``), so that CPython gives that frame a chunk of its own, 2 MiB, about half
of which is left for the frames below it: every frame of the recursion then fits in one chunk,
whatever the caller's depth.  The oversized stack is only reserved address space (the pages are
never touched) and costs one mapping per call.  Elsewhere (CPython before 3.11, whose frames
are objects of their own, another implementation, a version whose code objects refuse the
change) ``roomy`` is a plain call.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: Value-stack slots of the calling frame: 2**17 pointers, 1 MiB, so that its chunk (the size
#: doubled from 16 KiB until it holds the frame plus CPython's margin) is 2 MiB, with about 1
#: MiB left for the frames below it: more than the recursion limit's worth of libcst frames.
SLOTS = 1 << 17


def _call(fn, args, kwargs):
    return fn(*args, **kwargs)


def _roomy_caller() -> Callable:
    if sys.implementation.name != "cpython" or sys.version_info < (3, 11):
        return _call  # frames are objects of their own there: no chunks to churn
    try:
        code = _call.__code__.replace(co_stacksize=SLOTS)
        return types.FunctionType(code, _call.__globals__, "roomy_call")
    except (AttributeError, TypeError, ValueError):  # not CPython's code objects: a plain call
        return _call


_CALLER = _roomy_caller()


def roomy(fn: Callable[..., T], /, *args, **kwargs) -> T:
    """``fn(*args, **kwargs)``, its recursion in one frame chunk (see the module docstring)."""
    return _CALLER(fn, args, kwargs)
