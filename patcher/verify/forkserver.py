"""A warm start for check processes, run INSIDE a toolchain's base venv (not patcher's).

Every release's check process begins the same way: importing torch, onnx, onnxruntime and
onnxsim from the base venv costs seconds of CPU, as much as a third of a release's checks.
This server imports them once, then forks one child per check run; the child puts the
release's target dir on ``sys.path`` where ``PYTHONPATH`` would have put it and runs
``checks.py`` as ``__main__``, exactly as ``python checks.py ...`` would.  It never runs a
check itself, so every child starts from the same state.

It is only as good as its equivalence with a fresh process, so it reports what that rests
on, and ``patcher.verify.warm`` uses a child only when nothing a release's target dir holds
could have changed the imports done here (otherwise the check runs in a fresh process):

* ``loaded``: each top-level module the warm-up imported, with the file it came from;
* ``missed``: each module the warm-up looked for and did not find (an optional dependency
  that a target dir might provide);
* ``metadata``: what the warm-up asked ``importlib.metadata`` (distribution names, entry
  point groups; ``*`` for a scan of every distribution).

Protocol: JSON lines.  The server prints ``{"ready": ...}`` once; then for each request
``{"argv": [...], "path": DIR, "cwd": DIR, "env": {...}, "stdout": FILE, "stderr": FILE,
"sigint": "default" | "ignore"}`` read from stdin (``sigint``: what a fresh process would
start with, Python's KeyboardInterrupt or Ctrl-C ignored as its parent ignores it) it prints
``{"pid": N}`` at the fork and ``{"pid": N, "returncode": R}`` when the child ends (R
negative: killed by signal -R).  End of input ends the server.  Only the standard library is
imported here before the warm-up.
"""

from __future__ import annotations

import sys

#: What the interpreter had imported before this script ran: the same in a fresh process.
_STARTUP = {name.partition(".")[0] for name in sys.modules}

import atexit  # noqa: E402 (after _STARTUP: these count as the warm-up's own imports)
import importlib  # noqa: E402
import importlib.abc  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402

#: What every check process imports from the base venv: the modules checks.py uses, and
#: ``torch._dynamo``, which transformers' ``generate()`` imports (``is_torchdynamo_compiling``)
#: and which costs a check process more than a second (sympy, torch.distributed).
WARM_UP = ("torch", "torch.nn", "torch.onnx", "torch._dynamo", "numpy", "onnx", "onnxruntime", "onnxsim")


class _Misses(importlib.abc.MetaPathFinder):
    """Last on ``sys.meta_path``: it sees every import that no real finder resolved."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.recording = True

    def find_spec(self, fullname, path=None, target=None):  # noqa: ARG002 (the finder protocol)
        if self.recording:
            self.names.add(fullname)
        return None


def _record_metadata(asked: set[str], misses: _Misses) -> None:
    """Wrap the ``importlib.metadata`` functions that look distributions up, to note what
    the warm-up asked (while ``misses`` records too)."""
    md = importlib.metadata
    depth = [0]

    def wrap(function, key):
        def wrapper(*args, **kwargs):
            if misses.recording and not depth[0]:  # the outermost call: entry_points scans inside
                asked.add(key(*args, **kwargs))
            depth[0] += 1
            try:
                return function(*args, **kwargs)
            finally:
                depth[0] -= 1

        return wrapper

    by_name = lambda name=None, *a, **k: f"dist:{name}"  # noqa: E731
    for attr in ("distribution", "version", "metadata", "requires", "files"):
        setattr(md, attr, wrap(getattr(md, attr), by_name))
    md.distributions = wrap(md.distributions, lambda *a, **k: "*")
    md.entry_points = wrap(md.entry_points, lambda *a, **k: f"group:{k.get('group', '*')}")
    md.packages_distributions = wrap(md.packages_distributions, lambda *a, **k: "*")


def warm_up() -> dict:
    misses = _Misses()
    asked: set[str] = set()
    sys.meta_path.append(misses)
    _record_metadata(asked, misses)
    failed = {}
    for name in WARM_UP:
        try:
            importlib.import_module(name)
        except Exception as error:  # a fresh process fails the same way, later: not ours to judge
            failed[name] = f"{type(error).__name__}: {error}"
    misses.recording = False
    loaded = {}
    for top in sorted({name.partition(".")[0] for name in sys.modules} - _STARTUP):
        module = sys.modules.get(top) or next(m for n, m in sys.modules.items() if n.startswith(top + "."))
        origin = getattr(module, "__file__", None) or getattr(
            getattr(module, "__spec__", None), "origin", None
        )
        paths = list(getattr(module, "__path__", []) or [])
        loaded[top] = origin or (paths[0] if paths else "")
    # looked for at start-up, before this script: site's customisation hooks
    misses.names.update(name for name in ("sitecustomize", "usercustomize") if name not in sys.modules)
    return {"loaded": loaded, "missed": sorted(misses.names), "metadata": sorted(asked), "failed": failed}


def _child(request: dict) -> None:
    """In the forked child: become ``python SCRIPT ARGS`` with ``PYTHONPATH=DIR``; never returns."""
    code = 1
    # Ctrl-C as a fresh process would take it: ignored if its parent (patcher) ignores it, a
    # background job's lot; else Python's KeyboardInterrupt
    ignore = request.get("sigint") == "ignore"
    signal.signal(signal.SIGINT, signal.SIG_IGN if ignore else signal.default_int_handler)
    interrupted = False
    try:
        for fd, name in ((1, "stdout"), (2, "stderr")):
            handle = os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(handle, fd)
            os.close(handle)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        script = os.path.abspath(request["argv"][0])
        sys.argv = [script, *request["argv"][1:]]
        sys.path[0] = os.path.dirname(script)  # as for ``python SCRIPT``
        # the server's PYTHONPATH entry becomes the release's (PYTHONPATH's place in sys.path)
        same = [
            i
            for i, p in enumerate(sys.path)
            if p and os.path.realpath(p) == os.path.realpath(request["replace"])
        ]
        if same:
            sys.path[same[0]] = request["path"]
        else:
            sys.path.insert(1, request["path"])
        import runpy

        try:
            runpy.run_path(script, run_name="__main__")
            code = 0
        except SystemExit as stop:  # as the interpreter ends on it
            if stop.code is None or isinstance(stop.code, int):
                code = stop.code or 0
            else:
                print(stop.code, file=sys.stderr)
                code = 1
        except BaseException as error:
            import traceback

            traceback.print_exc()
            code = 1
            interrupted = isinstance(error, KeyboardInterrupt)
        atexit._run_exitfuncs()
    except KeyboardInterrupt:  # before the script ran, or in its exit functions
        interrupted = True
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        if interrupted:  # as CPython ends on an uncaught KeyboardInterrupt: killed by SIGINT
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        os._exit(code)


def _say(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> int:
    # Ctrl-C reaches the whole process group: the children stop as fresh processes would
    # (their handler is Python's default again), the server waits for them and reports
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _say({"ready": warm_up()})
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request)
        _say({"pid": pid})
        _, status = os.waitpid(pid, 0)
        _say({"pid": pid, "returncode": os.waitstatus_to_exitcode(status)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
