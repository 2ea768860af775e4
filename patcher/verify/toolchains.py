"""Verification toolchains: the stacks of torch, onnx, onnxsim and onnxruntime the checks run on.

**current** is patcher's own: torch 2.13.0 (the CPU build), the newest onnx, onnxsim and
onnxruntime, graphs exported at opset 17.  **vacc** is the vendor's deploy stack, the one its
model compiler runs: ``protobuf==3.20.3``, ``torch==2.1.0``, ``onnx==1.14.0``,
``onnxsim==0.4.35``, ``onnxruntime==1.13.1``, ``accelerate==0.25.0``, graphs exported by
TorchScript at opsets 14 and 17.  Each pin is taken exactly where a wheel exists for the
Python the environments run on (3.11), otherwise the nearest newer version that has one
(uv's ``lowest-direct`` resolution over ``>=`` the pin, wheels only); the report says which
pins moved.  On Python 3.11 that is onnxruntime: 1.13 and 1.14 have no cp311 wheel, 1.15.0
is taken.

A release whose own transformers cannot run its own Gemma on a toolchain (its import or a tiny
forward pass fails there; the reason also names the torch requirement the release declares
when that excludes the toolchain's torch) is **refused** by that toolchain, with the reason:
not a failure of patcher's output.

``ACCEPTS``/``REFUSES`` are what ``patcher verify --all --toolchain NAME`` measured, not what
anyone expects; ``patcher matrix`` prints them.  Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from patcher.errors import UsageError

__all__ = ["DEFAULT", "TOOLCHAINS", "Toolchain", "get"]


@dataclass(frozen=True)
class Toolchain:
    """One verification stack: how its base environment is built and what it measured."""

    name: str
    summary: str
    #: the base venv's directory name under the envs dir, and the per-release prefix
    base_name: str
    release_prefix: str
    release_recipe: int
    #: installed into the base venv (``pip``: the machine's pip, which takes the local CPU
    #: torch wheel; ``uv``: uv from the package index, ``lowest-direct`` over these)
    base_requirements: tuple[str, ...]
    installer: str
    #: limits on what the base's packages pull in (not direct requirements)
    base_constraints: tuple[str, ...] = ()
    #: the vendor's exact pins, compared with what was installed to report the moved ones
    vendor_pins: dict[str, str] = field(default_factory=dict)
    #: packages the base provides; a release's target dir must not shadow them
    provided: tuple[str, ...] = ()
    #: what each release's target dir installs (``{version}`` is the release)
    release_requirement: str = "transformers=={version}"
    torch: str = ""
    opsets: tuple[int, ...] = (17,)
    #: measured by ``patcher verify --all --toolchain NAME`` (see the module docstring)
    accepts: str = ""
    refuses: tuple[tuple[str, str], ...] = ()
    measured: str = ""

    def describe(self) -> str:
        """``vacc (torch 2.1.0, opsets 14, 17)``: the toolchain in a report's words."""
        return f"{self.name} (torch {self.torch}, ONNX opsets {', '.join(map(str, self.opsets))})"


CURRENT = Toolchain(
    name="current",
    summary="torch 2.13.0 (CPU), the newest onnx, onnxsim and onnxruntime; opset 17",
    base_name="base-torch2.13.0-py3.11-r2",  # r2: with onnxsim
    release_prefix="transformers",
    release_recipe=2,  # 2: with accelerate (4.51.0's from_pretrained cannot work without it)
    base_requirements=("torch==2.13.0", "onnx", "onnxruntime", "onnxsim", "numpy"),
    installer="pip",
    # numpy is not provided: some releases (4.42-4.4x) require numpy<2, which their target dir
    # then provides (torch 2.13 and onnxruntime run with numpy 1.26 as well).
    provided=("torch", "onnx", "onnxruntime", "onnxsim"),
    # accelerate as most users have it: from_pretrained then takes the low-memory path that
    # real checkpoints take (and 4.51.0 cannot load anything without it)
    release_requirement="transformers[accelerate]=={version}",
    torch="2.13.0",
    opsets=(17,),
    accepts="4.38.0–5.24.0 (115 of 115)",
    measured="every release's environment builds and runs its Gemma on torch 2.13; `patcher verify --all` "
    "passed all 115 before onnx_simplified was added, which was then run on 4.38.0, 4.40.2 and 5.24.0",
)

VACC = Toolchain(
    name="vacc",
    summary="the vendor's deploy stack: torch 2.1.0, onnx 1.14.0, onnxsim 0.4.35, onnxruntime 1.13.1 "
    "(nearest with a Python 3.11 wheel: 1.15.0), protobuf 3.20.3, accelerate 0.25.0; opsets 14 and 17",
    base_name="base-vacc-torch2.1.0-py3.11-r1",
    release_prefix="vacc-transformers",
    release_recipe=1,
    base_requirements=(
        "torch>=2.1.0",
        "onnx>=1.14.0",
        "onnxsim>=0.4.35",
        "onnxruntime>=1.13.1",
        "protobuf>=3.20.3",
        "accelerate>=0.25.0",
    ),
    installer="uv",
    # torch 2.1, onnx 1.14 and onnxruntime 1.15 are built against numpy 1
    base_constraints=("numpy<2",),
    vendor_pins={
        "torch": "2.1.0",
        "onnx": "1.14.0",
        "onnxsim": "0.4.35",
        "onnxruntime": "1.13.1",
        "protobuf": "3.20.3",
        "accelerate": "0.25.0",
    },
    # the vendor's accelerate and protobuf, and the base's numpy 1, are the ones every
    # release runs with
    provided=("torch", "onnx", "onnxruntime", "onnxsim", "protobuf", "accelerate", "numpy"),
    release_requirement="transformers=={version}",
    torch="2.1.0",
    opsets=(14, 17),
    accepts="4.38.0–4.50.3, 4.51.1–4.51.3, 4.53.0–4.53.3, 4.54.1–4.55.4 (56 of 115)",
    refuses=(
        (
            "4.51.0",
            "its from_pretrained fails: init_empty_weights is not defined (it wants accelerate>=0.26)",
        ),
        (
            "4.52.1, 4.52.3–4.52.4",
            "its from_pretrained fails: torch 2.1 has no torch.distributed.tensor.DTensor",
        ),
        ("4.52.2", "its import fails on torch 2.1: NameError: name 'Replicate' is not defined"),
        ("4.54.0", "its Gemma uses torch.nn.RMSNorm, which torch 2.1 lacks (4.54.1 runs)"),
        ("4.56.0–4.57.6", "declares torch>=2.2; torch.utils._pytree lacks register_pytree_node"),
        ("5.0.0–5.24.0", "declares torch>=2.2 (5.1: 2.4, 5.15: 2.5, 5.20: 2.6); is_torch_available() False"),
    ),
    measured="patcher verify --all --toolchain vacc --jobs 2 on a shared 2-core machine, 75 min: every "
    "accepted release passed 32/32 (30/30 and 2 n/a before 4.42); the from_pretrained refusals were "
    "found there as failures of upstream's own from_pretrained and the probe was extended to them; "
    "re-checked with the final probe (fresh release environments) on 4.50.3, 4.51.0, 4.51.1, 4.52.4, "
    "4.53.0, 4.54.0, 4.54.1, 4.55.4, 4.56.0 and 5.0.0: the same results",
)

TOOLCHAINS = {t.name: t for t in (CURRENT, VACC)}
DEFAULT = CURRENT.name


def get(name: str | None) -> Toolchain:
    """The toolchain called ``name`` (``None``: the default); ``UsageError`` for another name."""
    name = DEFAULT if name is None else name
    try:
        return TOOLCHAINS[name]
    except KeyError:
        known = ", ".join(TOOLCHAINS)
        raise UsageError(f"no verification toolchain {name!r}; known: {known}") from None
