"""The SPEC section 6 checks, run INSIDE one release's environment (not patcher's).

``python checks.py OUTPUT_DIR [--result FILE]`` compares the vacc files in
OUTPUT_DIR (``modeling_gemma_vacc.py``, ``configuration_gemma_vacc.py``,
``quantization_vacc.py``) with the installed release's upstream Gemma, on two tiny random
float32 models: "mqa" (one key/value head, like gemma-2b) and "mha" (four, like gemma-7b).

Why a separate script: it must run with the release's transformers and the shared torch,
which patcher's own environment does not have.  So it imports only torch, transformers,
onnx, onnxruntime, numpy and the standard library, and talks to ``patcher.verify`` through
one JSON document (written to ``--result`` and printed as the last stdout line)::

    {"format": 1, "transformers": "4.40.2", "torch": "2.13.0+cpu",
     "checks": [{"name": "logits", "config": "mqa", "status": "pass",
                 "detail": "max|Δ|=2.4e-07", "seconds": 0.01}, ...]}

``status`` is ``pass``, ``fail``, ``exception`` (the release's own ``generate()`` raised
while driving the tuple-cache model: reported with its reason, counted as not passed) or
``skipped`` (the check does not apply: upstream lacks the class it compares, and the output
lacks it too; the detail says so).  Every check runs for both configs and in its own
``try``: one failure never hides another.  The exit code is 0 whenever the script itself ran
to the end.

``--upstream FILE [--config-upstream FILE]`` makes a local upstream the reference: FILE is
loaded as ``transformers.models.gemma.modeling_gemma`` (and the configuration as
``configuration_gemma``) into ``sys.modules`` before anything imports Gemma, so upstream's
classes, the auto mappings and the generic heads (``AutoModel.from_config``) all see it.
Nothing in the environment changes.
"""

from __future__ import annotations

import argparse
import copy
import functools
import importlib
import importlib.util
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

ATOL = 1e-4
QUANT_RTOL = 0.05
SEED = 0
BATCH, SEQ, PREFIX, PROMPT, NEW_TOKENS = 2, 7, 3, 5, 8
PAD_TAIL = 3  # right padding: the second row's last positions are masked
PACKAGE = "vacc_gemma"
OUTPUT_FILES = ("modeling_gemma_vacc.py", "configuration_gemma_vacc.py", "quantization_vacc.py")
CONFIGS = {"mqa": 1, "mha": 4}
#: The families the checks know: (class prefix, extra config of the tiny model).  Mistral's
#: window is longer than any test sequence (SEQ, PROMPT + NEW_TOKENS): with it the vacc plain
#: causal mask must give upstream's numbers; ``check_sliding_window`` then shortens it.
FAMILIES = {"gemma": ("Gemma", {}), "mistral": ("Mistral", {"sliding_window": 32})}
#: Checks that only some families have (reported after the common ones).
FAMILY_CHECKS = {"mistral": ("sliding_window",)}
#: A window shorter than the sequences, where the vacc form (plain causal) must differ.
SHORT_WINDOW = 3
MODEL, CLASS_PREFIX = "gemma", "Gemma"  # set by --model (set_family)
CHECK_NAMES = (
    "state_dict",
    "logits",
    "logits_padded",
    "logits_left_padded",
    "decode",
    "greedy",
    "generate",
    "strided_slice",
    "sequence_classification",
    "token_classification",
    "quantize",
    "onnx_prefill",
    "onnx_decode",
    "onnx_quantized",
    "onnx_simplified",
    "from_pretrained",
)
# Checks that write files: they get a scratch directory as a second argument.
WORKDIR_CHECKS = {"onnx_prefill", "onnx_decode", "onnx_quantized", "onnx_simplified", "from_pretrained"}
#: ONNX opsets the graphs are exported at unless ``--opsets`` says otherwise (a toolchain's).
DEFAULT_OPSETS = (17,)
# generate() arguments every release passes to prepare_inputs_for_generation.
STANDARD_GENERATE_KWARGS = {"past_key_values", "attention_mask", "inputs_embeds", "use_cache", "position_ids"}


def set_family(model: str) -> None:
    """Check the family ``model``: its classes, files and tiny config."""
    global MODEL, CLASS_PREFIX
    MODEL, CLASS_PREFIX = model, FAMILIES[model][0]


def N(name: str) -> str:
    """``name`` (spelled for Gemma) for the family under test: ``GemmaForCausalLM`` ->
    ``MistralForCausalLM``, ``modeling_gemma_vacc`` -> ``modeling_mistral_vacc``."""
    return name.replace("Gemma", CLASS_PREFIX).replace("gemma", MODEL)


class CheckFailed(Exception):
    """A check ran and found a difference; the message is the report's detail."""


class GenerateRaised(Exception):
    """The release's own ``generate()`` raised while driving the vacc model."""


class CheckSkipped(Exception):
    """The check does not apply to this upstream; the message says why."""


def model_kwargs(num_key_value_heads: int) -> dict:
    """The tiny Gemma: everything not named here is the release's own default."""
    return dict(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=num_key_value_heads,
        head_dim=16,
        max_position_embeddings=64,
        pad_token_id=0,
        **FAMILIES[MODEL][1],
    )


def eager_config(config_cls, **kwargs):
    """An upstream config forced to eager attention, in whichever way the release accepts."""
    try:
        config = config_cls(**kwargs, attn_implementation="eager")
    except TypeError:
        config = config_cls(**kwargs)
    try:
        config._attn_implementation = "eager"
    except AttributeError:  # a read-only property in some releases
        config._attn_implementation_internal = "eager"
    return config


def randomise(model: nn.Module, seed: int) -> nn.Module:
    """Draw every parameter from N(0, 0.1): upstream init leaves RMSNorm weights at zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return model.eval()


def import_output(output_dir: Path, workdir: Path):
    """Import OUTPUT_DIR as package ``vacc_gemma`` so its relative imports resolve."""
    package = workdir / PACKAGE
    package.mkdir()
    for name in map(N, OUTPUT_FILES):
        shutil.copy(output_dir / name, package / name)
    (package / "__init__.py").write_text("")
    sys.path.insert(0, str(workdir))
    modeling = importlib.import_module(f"{PACKAGE}.{N('modeling_gemma_vacc')}")
    configuration = importlib.import_module(f"{PACKAGE}.{N('configuration_gemma_vacc')}")
    quantization = importlib.import_module(f"{PACKAGE}.quantization_vacc")
    return modeling, configuration, quantization


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        raise CheckFailed(f"shape {tuple(a.shape)} != upstream {tuple(b.shape)}")
    return (a.float() - b.float()).abs().max().item()


def expect_close(a: torch.Tensor, b: torch.Tensor, what: str = "") -> str:
    diff = max_diff(a, b)
    detail = f"{what}max|Δ|={diff:.1e}"
    if not diff <= ATOL:  # also catches NaN
        raise CheckFailed(f"{detail} > {ATOL:.0e}")
    return detail


def as_tuple_cache(past, num_layers: int, bsz: int, kv_heads: int, length: int, head_dim: int):
    """Check the output cache is a tuple of ``(key, value)`` per layer with the contract's shape."""
    if not isinstance(past, tuple) or len(past) != num_layers:
        raise CheckFailed(f"cache is {type(past).__name__}, not a tuple of {num_layers} (key, value) pairs")
    want = (bsz, kv_heads, length, head_dim)
    for layer in past:
        if not isinstance(layer, tuple) or len(layer) != 2:
            raise CheckFailed(f"cache layer is {type(layer).__name__}, not a (key, value) tuple")
        for tensor in layer:
            if tuple(tensor.shape) != want:
                raise CheckFailed(f"cache tensor shape {tuple(tensor.shape)}, expected {want}")
    return past


class Case:
    """One config ("mqa" or "mha"): upstream and vacc models on the same weights, and inputs."""

    def __init__(self, name: str, kv_heads: int, upstream_mod, modeling, configuration):
        torch.manual_seed(SEED)
        self.name = name
        self.kwargs = model_kwargs(kv_heads)
        self.kv_heads = kv_heads
        self.upstream_mod = upstream_mod
        self.modeling = modeling
        self.vacc_config_cls = getattr(configuration, N("GemmaConfig"))
        self.upstream_config = eager_config(getattr(upstream_mod, N("GemmaConfig")), **self.kwargs)
        self.upstream = randomise(getattr(upstream_mod, N("GemmaForCausalLM"))(self.upstream_config), SEED)
        self.vacc_config = self.vacc_config_cls(**self.kwargs)
        self.vacc = getattr(modeling, N("GemmaForCausalLM"))(self.vacc_config).eval()
        self.load = self.vacc.load_state_dict(self.upstream.state_dict(), strict=False)

        generator = torch.Generator().manual_seed(SEED + 1)
        vocab = self.kwargs["vocab_size"]
        self.input_ids = torch.randint(1, vocab, (BATCH, SEQ), generator=generator)
        self.ones = torch.ones(BATCH, SEQ, dtype=torch.long)
        self.padded_mask = self.ones.clone()
        self.padded_mask[1, -PAD_TAIL:] = 0
        with torch.no_grad():
            self.upstream_logits = self.upstream(self.input_ids, attention_mask=self.ones).logits

    def vacc_logits(self, model=None, **kwargs) -> torch.Tensor:
        model = self.vacc if model is None else model
        with torch.no_grad():
            return model(self.input_ids, attention_mask=self.ones, return_dict=False, **kwargs)[0]

    def vacc_from_weights(self, **extra):
        """A fresh vacc model with extra config entries, carrying the upstream weights."""
        model = getattr(self.modeling, N("GemmaForCausalLM"))(
            self.vacc_config_cls(**self.kwargs, **extra)
        ).eval()
        model.load_state_dict(self.upstream.state_dict(), strict=True)
        return model


# --- the checks: each returns its detail string or raises CheckFailed -------------------------


def check_state_dict(case: Case) -> str:
    missing, unexpected = list(case.load.missing_keys), list(case.load.unexpected_keys)
    if missing or unexpected:
        raise CheckFailed(f"missing {missing or 'none'}; unexpected {unexpected or 'none'}")
    return f"{len(case.upstream.state_dict())} keys, none missing or unexpected"


def check_logits(case: Case) -> str:
    detail = expect_close(case.vacc_logits(), case.upstream_logits)
    with torch.no_grad():
        out = case.vacc(case.input_ids, attention_mask=case.ones, return_dict=True)
    if not hasattr(out, "logits"):
        raise CheckFailed(f"return_dict=True gave {type(out).__name__} without .logits")
    expect_close(out.logits, case.upstream_logits, "return_dict=True ")
    return detail


def check_logits_padded(case: Case) -> str:
    mask = case.padded_mask
    with torch.no_grad():
        want = case.upstream(case.input_ids, attention_mask=mask).logits
        got = case.vacc(case.input_ids, attention_mask=mask, return_dict=False)[0]
    keep = mask.bool()
    return expect_close(got[keep], want[keep])


def check_logits_left_padded(case: Case) -> str:
    """Left padding, positions counted from the first real token (as ``generate()`` does).

    Right padding alone cannot catch a dropped padding mask: causal masking already hides
    the padded tail from every unmasked position.  Left padding can.
    """
    mask = case.padded_mask.flip(-1)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        want = case.upstream(case.input_ids, attention_mask=mask, position_ids=position_ids).logits
        got = case.vacc(case.input_ids, attention_mask=mask, position_ids=position_ids, return_dict=False)[0]
    keep = mask.bool()
    return expect_close(got[keep], want[keep])


def check_decode(case: Case) -> str:
    cfg = case.kwargs
    with torch.no_grad():
        out = case.vacc(
            case.input_ids[:, :PREFIX],
            attention_mask=case.ones[:, :PREFIX],
            use_cache=True,
            return_dict=False,
        )
        logits, past = out[0], out[1]
        as_tuple_cache(past, cfg["num_hidden_layers"], BATCH, case.kv_heads, PREFIX, cfg["head_dim"])
        worst = max_diff(logits, case.upstream_logits[:, :PREFIX])
        for step in range(PREFIX, SEQ):
            out = case.vacc(
                case.input_ids[:, step : step + 1],
                attention_mask=case.ones[:, : step + 1],
                position_ids=torch.tensor([[step]]),
                past_key_values=past,
                use_cache=True,
                return_dict=False,
            )
            past = as_tuple_cache(
                out[1], cfg["num_hidden_layers"], BATCH, case.kv_heads, step + 1, cfg["head_dim"]
            )
            worst = max(worst, max_diff(out[0][:, -1], case.upstream_logits[:, step]))
    detail = f"prefill {PREFIX} + {SEQ - PREFIX} steps, max|Δ|={worst:.1e}"
    if not worst <= ATOL:
        raise CheckFailed(f"{detail} > {ATOL:.0e}")
    return detail


def greedy_through_tuple_cache(model, input_ids, eos, pad) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Greedy decoding by hand, one token at a time through the tuple cache.

    Returns the tokens and each step's next-token logits.  Rows that produced an
    end-of-sequence token continue with the pad token and decoding stops once every row has
    finished, as ``generate()`` does.
    """
    steps = []
    ids = input_ids
    unfinished = torch.ones(ids.shape[0], dtype=torch.bool)
    past = None
    eos_ids = torch.tensor([] if eos is None else ([eos] if isinstance(eos, int) else list(eos)))
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            length = ids.shape[1]
            if past is None:
                out = model(ids, attention_mask=torch.ones_like(ids), use_cache=True, return_dict=False)
            else:
                out = model(
                    ids[:, -1:],
                    attention_mask=torch.ones_like(ids),
                    position_ids=torch.tensor([[length - 1]]),
                    past_key_values=past,
                    use_cache=True,
                    return_dict=False,
                )
            past = out[1]
            steps.append(out[0][:, -1])
            token = steps[-1].argmax(-1)
            token = torch.where(unfinished, token, torch.full_like(token, pad))
            ids = torch.cat([ids, token[:, None]], dim=1)
            unfinished &= ~torch.isin(token, eos_ids)
            if not unfinished.any():
                break
    return ids, steps


def _prompt(case: Case) -> torch.Tensor:
    return case.input_ids[:, :PROMPT]


def _upstream_generate(case: Case) -> torch.Tensor:
    prompt = _prompt(case)
    with torch.no_grad():
        return case.upstream.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            pad_token_id=case.kwargs["pad_token_id"],
        )


def check_greedy(case: Case) -> str:
    want = _upstream_generate(case)
    eos = case.upstream.generation_config.eos_token_id
    got, steps = greedy_through_tuple_cache(case.vacc, _prompt(case), eos, case.kwargs["pad_token_id"])
    if got.shape != want.shape or not torch.equal(got, want):
        raise CheckFailed(
            f"tokens {got[:, PROMPT:].tolist()} != upstream generate {want[:, PROMPT:].tolist()}"
        )
    # Equal tokens survive small numeric drift; the step logits must match too.
    with torch.no_grad():
        full = case.upstream(want, attention_mask=torch.ones_like(want)).logits
    worst = max(max_diff(step, full[:, PROMPT - 1 + i]) for i, step in enumerate(steps))
    detail = f"{want.shape[1] - PROMPT} new tokens equal upstream generate(), step logits max|Δ|={worst:.1e}"
    if not worst <= ATOL:
        raise CheckFailed(f"{detail} > {ATOL:.0e}")
    return detail


def check_generate(case: Case) -> str:
    """The release's own ``generate()`` on the vacc model gives upstream's greedy tokens.

    The detail also says which extra keyword arguments ``generate()`` handed to
    ``prepare_inputs_for_generation`` (they differ between releases) and whether the decode
    steps really went through the tuple cache or recomputed the whole sequence.
    """
    want = _upstream_generate(case)
    prompt = _prompt(case)
    seen: set[str] = set()
    steps: list[bool] = []  # per forward call: one new token fed with a tuple cache
    model = copy.deepcopy(case.vacc)
    prepare, forward = model.prepare_inputs_for_generation, model.forward

    @functools.wraps(prepare)
    def recording_prepare(*args, **kwargs):
        seen.update(kwargs)
        return prepare(*args, **kwargs)

    @functools.wraps(forward)
    def recording_forward(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        cached = isinstance(kwargs.get("past_key_values"), tuple)
        steps.append(cached and ids is not None and ids.shape[1] == 1)
        return forward(*args, **kwargs)

    model.prepare_inputs_for_generation = recording_prepare
    model.forward = recording_forward
    try:
        with torch.no_grad():
            got = model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=NEW_TOKENS,
                do_sample=False,
                pad_token_id=case.kwargs["pad_token_id"],
            )
    except Exception as error:
        raise GenerateRaised(f"{type(error).__name__}: {error}") from error
    extra = sorted(seen - STANDARD_GENERATE_KWARGS)
    notes = [f"generate() also passed {', '.join(extra)}"] if extra else []
    decode_steps = steps[1:]
    if decode_steps and not all(decode_steps):
        notes.append(f"only {sum(decode_steps)}/{len(decode_steps)} decode steps used the tuple cache")
    note = "".join(f"; {n}" for n in notes)
    if got.shape != want.shape or not torch.equal(got, want):
        raise CheckFailed(f"tokens {got[:, PROMPT:].tolist()} != upstream {want[:, PROMPT:].tolist()}{note}")
    return f"{want.shape[1] - PROMPT} new tokens equal upstream{note}"


def check_strided_slice(case: Case) -> str:
    model = case.vacc_from_weights(insert_slice=1, iter_num=0)
    logits = case.vacc_logits(model)
    want = (BATCH, 1, case.kwargs["vocab_size"])
    if tuple(logits.shape) != want:
        raise CheckFailed(f"logits shape {tuple(logits.shape)}, expected {want}")
    return expect_close(logits, case.upstream_logits[:, -1:])


def check_sequence_classification(case: Case) -> str:
    kwargs = dict(case.kwargs, num_labels=3)
    upstream = randomise(
        getattr(case.upstream_mod, N("GemmaForSequenceClassification"))(
            eager_config(getattr(case.upstream_mod, N("GemmaConfig")), **kwargs)
        ),
        SEED + 2,
    )
    vacc = getattr(case.modeling, N("GemmaForSequenceClassification"))(case.vacc_config_cls(**kwargs)).eval()
    load = vacc.load_state_dict(upstream.state_dict(), strict=False)
    if load.missing_keys or load.unexpected_keys:
        raise CheckFailed(f"state_dict: missing {load.missing_keys}; unexpected {load.unexpected_keys}")
    ids = case.input_ids.clone()
    ids[1, -PAD_TAIL:] = kwargs["pad_token_id"]
    with torch.no_grad():
        want = upstream(ids, attention_mask=case.padded_mask).logits
        got = vacc(ids, attention_mask=case.padded_mask, return_dict=False)[0]
    return expect_close(got, want)


def check_token_classification(case: Case) -> str:
    """Upstream's and the output's ``GemmaForTokenClassification`` on the same weights give the
    same logits on right-padded input (compared where the mask is 1), as tuple and as
    ``return_dict=True``.  Skipped, saying so, when upstream has no token classifier (before
    4.42); an output lacking the class that upstream has fails."""
    upstream_cls = getattr(case.upstream_mod, N("GemmaForTokenClassification"), None)
    vacc_cls = getattr(case.modeling, N("GemmaForTokenClassification"), None)
    if upstream_cls is None and vacc_cls is None:
        raise CheckSkipped(f"{case.upstream_name} has no {N('GemmaForTokenClassification')}")
    if upstream_cls is None:
        raise CheckFailed(f"the output has a {N('GemmaForTokenClassification')} that upstream lacks")
    if vacc_cls is None:
        raise CheckFailed(f"the output lacks upstream's {N('GemmaForTokenClassification')}")
    kwargs = dict(case.kwargs, num_labels=3)
    upstream = randomise(
        upstream_cls(eager_config(getattr(case.upstream_mod, N("GemmaConfig")), **kwargs)), SEED + 3
    )
    vacc = vacc_cls(case.vacc_config_cls(**kwargs)).eval()
    load = vacc.load_state_dict(upstream.state_dict(), strict=False)
    if load.missing_keys or load.unexpected_keys:
        raise CheckFailed(f"state_dict: missing {load.missing_keys}; unexpected {load.unexpected_keys}")
    ids = case.input_ids.clone()
    ids[1, -PAD_TAIL:] = kwargs["pad_token_id"]
    mask = case.padded_mask
    keep = mask.bool()
    with torch.no_grad():
        want = upstream(ids, attention_mask=mask).logits
        as_tuple = vacc(ids, attention_mask=mask, return_dict=False)
        as_dict = vacc(ids, attention_mask=mask, return_dict=True)
    if not isinstance(as_tuple, tuple):
        raise CheckFailed(f"return_dict=False gave {type(as_tuple).__name__}, not a tuple")
    if not hasattr(as_dict, "logits"):
        raise CheckFailed(f"return_dict=True gave {type(as_dict).__name__} without .logits")
    detail = expect_close(as_tuple[0][keep], want[keep])
    expect_close(as_dict.logits[keep], want[keep], "return_dict=True ")
    return detail + f" over {int(keep.sum())} unpadded tokens, tuple and return_dict=True"


def check_quantize(case: Case) -> str:
    model = copy.deepcopy(case.vacc)
    returned = model.quantize(8)
    if returned is not None:
        model = returned
    count = sum(type(m).__name__ == "QuantizedLinearPerChannel" for m in model.modules())
    expected = 7 * case.kwargs["num_hidden_layers"]
    if count != expected:
        raise CheckFailed(f"{count} quantized linears, expected {expected}")
    reference = case.vacc_logits()
    quantized = case.vacc_logits(model)
    rel = ((quantized - reference).norm() / reference.norm()).item()
    detail = f"rel. error {rel:.2e}, {count} linears int8"
    if not rel < QUANT_RTOL:
        raise CheckFailed(f"{detail} ≥ {QUANT_RTOL}")
    return detail


# --- ONNX ------------------------------------------------------------------------------------------


class PrefillGraph(nn.Module):
    """input_ids, attention_mask, position_ids -> logits, key_0, value_0, key_1, ..."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids):
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            return_dict=False,
        )
        return (out[0], *[t for layer in out[1] for t in layer])


class DecodeGraph(nn.Module):
    """One token plus the flattened tuple cache in; logits plus the next flattened cache out."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, *past_flat):
        past = tuple((past_flat[i], past_flat[i + 1]) for i in range(0, len(past_flat), 2))
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past,
            use_cache=True,
            return_dict=False,
        )
        return (out[0], *[t for layer in out[1] for t in layer])


def _cache_names(prefix: str, layers: int) -> list[str]:
    return [f"{prefix}_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]


class Graph(NamedTuple):
    """One exported graph, kept for ``check_onnx_simplified``: what it is, where it lies, how
    to feed it and what PyTorch computed for those inputs.  (A NamedTuple, not a dataclass:
    tests load this script by path without registering it as a module.)"""

    kind: str  # "prefill", "decode" or "int8 prefill"
    opset: int
    path: Path
    inputs: list[str]
    args: tuple
    expected: tuple
    custom: int = 0  # Vastai::QuantizedLinearPerChannel nodes the graph must keep


def _export(
    module: nn.Module,
    args: tuple,
    path: Path,
    inputs: list[str],
    outputs: list[str],
    opset: int,
    custom: bool = False,
) -> None:
    """The TorchScript exporter (``dynamo=False`` where torch has the dynamo one too)."""
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            opset_version=opset,
            input_names=inputs,
            output_names=outputs,
            custom_opsets={"Vastai": 1} if custom else None,
            **legacy,
        )


def _run_onnx(model, names: list[str], args: tuple) -> tuple[list, list[str]]:
    """Run the graph (a path or an ``onnx.ModelProto``) in onnxruntime; also return the inputs
    the graph dropped.

    The TorchScript exporter removes inputs that do not influence the outputs (an
    attention mask that the model ignores, say); they are reported, not fed.
    """
    import onnxruntime

    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    session = onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])
    declared = {i.name for i in session.get_inputs()}
    feed = {name: arg.numpy() for name, arg in zip(names, args, strict=True) if name in declared}
    return session.run(None, feed), [name for name in names if name not in declared]


def _onnx_delta(expected: tuple, run: tuple[list, list[str]]) -> tuple[float, str]:
    """The largest difference between onnxruntime's outputs and PyTorch's, and its detail;
    ``CheckFailed`` above the tolerance."""
    got, dropped = run
    if len(got) != len(expected):
        raise CheckFailed(f"graph has {len(got)} outputs, expected {len(expected)}")
    worst = max(max_diff(torch.from_numpy(g), e) for g, e in zip(got, expected, strict=True))
    detail = f"{len(got)} outputs, max|Δ|={worst:.1e}"
    if dropped:
        detail += f"; graph ignores {', '.join(dropped)}"
    if not worst <= ATOL:
        raise CheckFailed(f"{detail} > {ATOL:.0e}")
    return worst, detail


def _compare_onnx(expected: tuple, run: tuple[list, list[str]]) -> str:
    return _onnx_delta(expected, run)[1]


def _per_opset(case: Case, one) -> str:
    """Run ``one(opset)`` for each opset of the toolchain; the details joined, opset first."""
    details = []
    for opset in case.opsets:
        try:
            details.append(f"opset {opset}: {one(opset)}")
        except CheckFailed as failure:
            raise CheckFailed(f"opset {opset}: {failure}") from None
    return "; ".join(details)


def _prefill_args(case: Case) -> tuple:
    ids = case.input_ids[:, :PREFIX]
    return ids, torch.ones_like(ids), torch.arange(PREFIX)[None].expand(BATCH, -1).contiguous()


def check_onnx_prefill(case: Case, workdir: Path) -> str:
    layers = case.kwargs["num_hidden_layers"]
    module = PrefillGraph(case.vacc).eval()
    args = _prefill_args(case)
    inputs, outputs = (
        ["input_ids", "attention_mask", "position_ids"],
        ["logits", *_cache_names("present", layers)],
    )
    with torch.no_grad():
        expected = module(*args)

    def one(opset: int) -> str:
        path = workdir / f"prefill-{case.name}-opset{opset}.onnx"
        _export(module, args, path, inputs, outputs, opset)
        case.graphs.append(Graph("prefill", opset, path, inputs, args, expected))
        return _compare_onnx(expected, _run_onnx(path, inputs, args))

    return _per_opset(case, one)


def check_onnx_decode(case: Case, workdir: Path) -> str:
    layers = case.kwargs["num_hidden_layers"]
    with torch.no_grad():
        past_flat = PrefillGraph(case.vacc)(*_prefill_args(case))[1:]
    module = DecodeGraph(case.vacc).eval()
    args = (
        case.input_ids[:, PREFIX : PREFIX + 1],
        case.ones[:, : PREFIX + 1],
        torch.tensor([[PREFIX]] * BATCH),
        *past_flat,
    )
    inputs = ["input_ids", "attention_mask", "position_ids", *_cache_names("past", layers)]
    outputs = ["logits", *_cache_names("present", layers)]
    with torch.no_grad():
        expected = module(*args)
    expect_close(expected[0][:, -1], case.upstream_logits[:, PREFIX], "decode vs upstream ")

    def one(opset: int) -> str:
        path = workdir / f"decode-{case.name}-opset{opset}.onnx"
        _export(module, args, path, inputs, outputs, opset)
        case.graphs.append(Graph("decode", opset, path, inputs, args, expected))
        return _compare_onnx(expected, _run_onnx(path, inputs, args))

    return _per_opset(case, one)


CUSTOM_DOMAIN, CUSTOM_OP = "Vastai", "QuantizedLinearPerChannel"


def _custom_nodes(model) -> int:
    return sum(n.domain == CUSTOM_DOMAIN and n.op_type == CUSTOM_OP for n in model.graph.node)


def lower_custom_op(model):
    """A copy of ``model`` where each ``Vastai::QuantizedLinearPerChannel(x, w_int8, scale)`` is
    written in standard ops (``x @ (float(w) * scale[:, None]).T``, the op's definition in
    ``quantization_vacc.py``), so that onnxruntime, which does not know the vendor's op, can
    run the int8 graph and be compared with PyTorch."""
    import onnx
    from onnx import TensorProto, helper

    lowered = copy.deepcopy(model)
    graph = lowered.graph
    nodes = []
    axes = "vacc_lowering_axes_1"
    graph.initializer.append(helper.make_tensor(axes, TensorProto.INT64, [1], [1]))
    for i, node in enumerate(graph.node):
        if not (node.domain == CUSTOM_DOMAIN and node.op_type == CUSTOM_OP):
            nodes.append(node)
            continue
        x, weight, scale = node.input
        name = f"vacc_lowering_{i}"
        nodes += [
            helper.make_node("Cast", [weight], [f"{name}_w"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", [scale, axes], [f"{name}_s"]),
            helper.make_node("Mul", [f"{name}_w", f"{name}_s"], [f"{name}_dq"]),
            helper.make_node("Transpose", [f"{name}_dq"], [f"{name}_t"], perm=[1, 0]),
            helper.make_node("MatMul", [x, f"{name}_t"], list(node.output)),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [o for o in lowered.opset_import if o.domain != CUSTOM_DOMAIN]
    del lowered.opset_import[:]
    lowered.opset_import.extend(kept)
    onnx.checker.check_model(lowered)
    return lowered


def check_onnx_quantized(case: Case, workdir: Path) -> str:
    """The int8 prefill graph carries one ``Vastai::QuantizedLinearPerChannel`` per quantized
    projection, and (the op lowered to standard ones) onnxruntime reproduces the quantized
    PyTorch model."""
    import onnx

    model = copy.deepcopy(case.vacc)
    returned = model.quantize(8)
    model = model if returned is None else returned
    layers = case.kwargs["num_hidden_layers"]
    module = PrefillGraph(model).eval()
    args = _prefill_args(case)
    inputs, outputs = (
        ["input_ids", "attention_mask", "position_ids"],
        ["logits", *_cache_names("present", layers)],
    )
    with torch.no_grad():
        expected = module(*args)
    want = 7 * layers

    def one(opset: int) -> str:
        path = workdir / f"prefill-int8-{case.name}-opset{opset}.onnx"
        _export(module, args, path, inputs, outputs, opset, custom=True)
        exported = onnx.load(str(path), load_external_data=False)
        found = _custom_nodes(exported)
        if found != want:
            raise CheckFailed(f"{found} {CUSTOM_DOMAIN}::{CUSTOM_OP} nodes, expected {want}")
        case.graphs.append(Graph("int8 prefill", opset, path, inputs, args, expected, custom=want))
        compared = _compare_onnx(expected, _run_onnx(lower_custom_op(exported), inputs, args))
        return f"{found} {CUSTOM_DOMAIN} nodes, op lowered in onnxruntime: {compared}"

    return _per_opset(case, one)


def check_onnx_simplified(case: Case, workdir: Path) -> str:
    """Every graph the ONNX checks exported, simplified with onnxsim as the vacc compiler's
    front end does: the custom op survives and onnxruntime still reproduces PyTorch."""
    import onnx
    import onnxsim

    if not case.graphs:
        raise CheckFailed("no graph was exported (see the onnx_* checks)")
    before = after = 0
    worst = []
    for graph in case.graphs:
        where = f"{graph.kind} opset {graph.opset}"
        model = onnx.load(str(graph.path), load_external_data=False)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                simplified, _ = onnxsim.simplify(model, check_n=0)
        except Exception as error:
            raise CheckFailed(f"{where}: onnxsim failed: {_error_line(error)}") from None
        before += len(model.graph.node)
        after += len(simplified.graph.node)
        if graph.custom:
            found = _custom_nodes(simplified)
            if found != graph.custom:
                kept = f"{found} {CUSTOM_DOMAIN}::{CUSTOM_OP} nodes after onnxsim"
                raise CheckFailed(f"{where}: {kept}, expected {graph.custom}")
            simplified = lower_custom_op(simplified)
        try:
            worst.append(_onnx_delta(graph.expected, _run_onnx(simplified, graph.inputs, graph.args))[0])
        except CheckFailed as failure:
            raise CheckFailed(f"{where} simplified: {failure}") from None
    exported = {graph.kind for graph in case.graphs}
    missing = [kind for kind in ("prefill", "decode", "int8 prefill") if kind not in exported]
    if missing:
        raise CheckFailed(f"{', '.join(missing)} not exported (see the onnx_* checks); the others simplify")
    opsets = sorted({g.opset for g in case.graphs})
    at = f"opset{'s' if len(opsets) > 1 else ''} {', '.join(map(str, opsets))}"
    return (
        f"{len(case.graphs)} graphs ({at}), {before}→{after} nodes, custom ops kept, "
        f"onnxruntime max|Δ|={max(worst):.1e}"
    )


# --- trust_remote_code ------------------------------------------------------------------------------


@functools.cache
def _checkpoint_module():
    """patcher's ``deploy/checkpoint.py`` (standard library only), loaded by path: the check
    installs the files exactly the way ``patcher install`` does."""
    path = Path(__file__).resolve().parent.parent / "deploy" / "checkpoint.py"
    spec = importlib.util.spec_from_file_location("patcher_checkpoint", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def check_from_pretrained(case: Case, workdir: Path) -> str:
    """Upstream's ``save_pretrained`` checkpoint plus the outputs and the auto_map loads with
    ``AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`` as the vacc class and
    gives upstream's logits; installing a second time changes nothing."""
    import transformers

    checkpoint = _checkpoint_module()
    directory = workdir / f"checkpoint_{case.name}"
    case.upstream.save_pretrained(directory)
    files = {}
    for name in map(N, OUTPUT_FILES):
        with open(case.output_dir / name, encoding="utf-8", newline="") as handle:
            files[name] = handle.read()
    family = {"auto_map": checkpoint.auto_map_for(MODEL, CLASS_PREFIX), "model_type": MODEL}
    checkpoint.install(directory, files, **family)
    if checkpoint.install(directory, files, **family).changed:
        raise CheckFailed("installing a second time changed the checkpoint")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, info = transformers.AutoModelForCausalLM.from_pretrained(
            str(directory), trust_remote_code=True, output_loading_info=True
        )
    cls = type(model)
    module = cls.__module__
    # remote code is imported as transformers_modules.<checkpoint dir>.<file>
    remote = module.startswith("transformers_modules.") and module.endswith(N(".modeling_gemma_vacc"))
    if cls.__name__ != N("GemmaForCausalLM") or not remote:
        raise CheckFailed(
            f"loaded {module}.{cls.__name__}, not the checkpoint's vacc {N('GemmaForCausalLM')}"
        )
    missing, unexpected = list(info.get("missing_keys", ())), list(info.get("unexpected_keys", ()))
    if missing or unexpected:
        raise CheckFailed(f"from_pretrained: missing {missing or 'none'}; unexpected {unexpected or 'none'}")
    logits = case.vacc_logits(model.eval())
    return "vacc class from the checkpoint, " + expect_close(logits, case.upstream_logits)


# --- running ---------------------------------------------------------------------------------------


def _record(name: str, config: str, status: str, detail: str, started: float) -> dict:
    return {
        "name": name,
        "config": config,
        "status": status,
        "detail": detail,
        "seconds": round(time.monotonic() - started, 3),
    }


def _error_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}".rstrip(": ")


class VendorDecision(Exception):
    """The output differs from upstream where the vendor decided it should; neither a pass nor
    a failure (the message gives the numbers)."""


def check_sliding_window(case: Case) -> str:
    """Mistral with a window shorter than the sequence (SHORT_WINDOW < SEQ): upstream masks the
    keys older than the window, the vacc form's mask is plain causal (the vendor's decision).
    Reported as that decision when the vacc logits equal upstream's without a window and differ
    from upstream's windowed ones; a vacc model that depends on the window fails."""
    kwargs = {**case.kwargs, "sliding_window": SHORT_WINDOW}
    config = eager_config(getattr(case.upstream_mod, N("GemmaConfig")), **kwargs)
    upstream = getattr(case.upstream_mod, N("GemmaForCausalLM"))(config).eval()
    upstream.load_state_dict(case.upstream.state_dict(), strict=True)
    vacc = getattr(case.modeling, N("GemmaForCausalLM"))(case.vacc_config_cls(**kwargs)).eval()
    vacc.load_state_dict(case.upstream.state_dict(), strict=True)
    with torch.no_grad():
        windowed = upstream(case.input_ids, attention_mask=case.ones).logits
    logits = case.vacc_logits(vacc)
    plain = max_diff(logits, case.upstream_logits)
    if plain > ATOL:
        raise CheckFailed(
            f"the vacc logits depend on sliding_window (max abs diff {plain:.2e} from the unwindowed)"
        )
    delta = max_diff(logits, windowed)
    what = f"sliding_window={SHORT_WINDOW} < {SEQ} tokens"
    if delta <= ATOL:
        return f"{what}: upstream's eager attention does not window here either ({delta:.2e})"
    raise VendorDecision(
        f"{what}: plain causal mask, as the vendor decided; upstream's windowed logits differ by "
        f"{delta:.2e}, the vacc ones equal upstream's unwindowed ({plain:.2e})"
    )


def run_case(name: str, case: Case, workdir: Path) -> list[dict]:
    """Run every check for one config; never let one check stop the next."""
    results = []
    for check in (*CHECK_NAMES, *FAMILY_CHECKS.get(MODEL, ())):
        started = time.monotonic()
        function = globals()[f"check_{check}"]
        try:
            if check in WORKDIR_CHECKS:
                detail = function(case, workdir)
            else:
                detail = function(case)
            results.append(_record(check, name, "pass", detail, started))
        except CheckFailed as failure:
            results.append(_record(check, name, "fail", str(failure), started))
        except GenerateRaised as raised:
            traceback.print_exc()
            results.append(_record(check, name, "exception", str(raised), started))
        except CheckSkipped as skipped:
            results.append(_record(check, name, "skipped", str(skipped), started))
        except VendorDecision as decision:
            results.append(_record(check, name, "decision", str(decision), started))
        except Exception as error:
            traceback.print_exc()
            results.append(_record(check, name, "fail", _error_line(error), started))
    return results


GEMMA = "transformers.models.gemma"  # the package of the family under test: see package()


def family_package() -> str:
    return N(GEMMA)


def install_overlay(modeling: Path, configuration: Path | None):
    """Make local upstream files transformers' own Gemma modules for this process.

    Each file is loaded under its real module name (so ``from ...modeling_utils import`` and
    ``from .configuration_gemma import`` resolve inside transformers) and put in
    ``sys.modules`` before anything imports Gemma: every later import, transformers' lazy
    modules and the auto mappings included, then finds the overlay.  Returns the modeling
    module.  Refuses to run when Gemma was imported already (the overlay would not be seen).
    """
    package = importlib.import_module(family_package())
    loaded = []
    for name, path in ((N("configuration_gemma"), configuration), (N("modeling_gemma"), modeling)):
        if path is None:
            continue
        qualified = f"{N(GEMMA)}.{name}"
        if qualified in sys.modules:
            raise RuntimeError(f"{qualified} was imported before the local upstream could replace it")
        spec = importlib.util.spec_from_file_location(qualified, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[qualified] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[qualified]
            raise
        setattr(package, name, module)
        loaded.append(module)
    return loaded[-1]


def ensure_overlay_seen(upstream_mod, with_configuration: bool) -> None:
    """The overlay is what transformers itself hands out: the package's lazy attributes, the
    top-level names and the auto mappings (through which the generic heads build their base
    model) all give the overlay's classes, and its configuration when there is one."""
    import transformers
    from transformers.models.auto import configuration_auto, modeling_auto

    config_cls = getattr(upstream_mod, N("GemmaConfig"))
    lm = N("GemmaForCausalLM")
    expected = {
        f"{N(GEMMA)}.{lm}": (getattr(sys.modules[N(GEMMA)], lm, None), lm),
        f"transformers.{lm}": (getattr(transformers, lm, None), lm),
        "AutoModelForCausalLM": (modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING[config_cls], lm),
        "AutoModel": (modeling_auto.MODEL_MAPPING[config_cls], N("GemmaModel")),
    }
    if with_configuration:
        expected["AutoConfig"] = (configuration_auto.CONFIG_MAPPING[MODEL], N("GemmaConfig"))
    wrong = [where for where, (cls, name) in expected.items() if cls is not getattr(upstream_mod, name)]
    if wrong:
        raise RuntimeError(f"transformers does not use the local upstream for {', '.join(wrong)}")


def run(
    output_dir: Path,
    overlay: tuple[Path, Path | None] | None = None,
    opsets: tuple[int, ...] = DEFAULT_OPSETS,
    scratch: Path | None = None,
) -> dict:
    """All checks for both configs; a setup failure fails every check it prevents.

    ``overlay`` is ``(modeling, configuration or None)``: local upstream files that take
    the place of transformers' own Gemma (see :func:`install_overlay`).  ``opsets``: the
    ONNX opsets every graph is exported at.  ``scratch``: where the checks' working
    directory goes (default: the system's temporary directory).
    """
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="patcher-verify-", dir=scratch) as tmp:
        workdir = Path(tmp)
        # remote code loaded by from_pretrained is copied here, not into the user's HF cache
        os.environ["HF_MODULES_CACHE"] = str(workdir / "hf-modules")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import transformers

        transformers.logging.set_verbosity_error()
        what = "the local upstream" if overlay is not None else "import"
        try:
            if overlay is not None:
                upstream_mod = install_overlay(*overlay)
                ensure_overlay_seen(upstream_mod, overlay[1] is not None)
                upstream_name = "the local upstream"
            else:
                upstream_mod = importlib.import_module(f"{N(GEMMA)}.{N('modeling_gemma')}")
                upstream_name = f"transformers {transformers.__version__}'s {N('modeling_gemma')}.py"
            what = "import"
            modeling, configuration, _ = import_output(output_dir, workdir)
        except Exception as error:
            traceback.print_exc()
            detail = f"{what} failed: {_error_line(error)}"
            return _document(
                [_record(c, n, "fail", detail, time.monotonic()) for n in CONFIGS for c in CHECK_NAMES]
            )
        for name, kv_heads in CONFIGS.items():
            started = time.monotonic()
            try:
                case = Case(name, kv_heads, upstream_mod, modeling, configuration)
                case.output_dir = output_dir
                case.upstream_name = upstream_name
                case.opsets = opsets
                case.graphs = []  # filled by the export checks, read by check_onnx_simplified
            except Exception as error:
                traceback.print_exc()
                detail = f"model setup failed: {_error_line(error)}"
                results += [_record(c, name, "fail", detail, started) for c in CHECK_NAMES]
                continue
            results += run_case(name, case, workdir)
    return _document(results)


def _version(module: str) -> str:
    """A package's version as the check process sees it, or why it has none."""
    try:
        return str(importlib.import_module(module).__version__)
    except Exception as error:  # absent, or failing to import: say so in the report
        return f"unavailable ({_error_line(error)})"


def _document(results: list[dict]) -> dict:
    import transformers

    return {
        "format": 1,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        **{name: _version(name) for name in ("onnx", "onnxruntime", "onnxsim")},
        "checks": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--result", type=Path, help="also write the JSON result to this file")
    parser.add_argument("--upstream", type=Path, help="a local modeling_gemma.py as the reference")
    parser.add_argument("--config-upstream", type=Path, help="with --upstream: its configuration_gemma.py")
    parser.add_argument("--model", default="gemma", choices=sorted(FAMILIES), help="the model family")
    parser.add_argument(
        "--opsets",
        default=",".join(map(str, DEFAULT_OPSETS)),
        help="comma-separated ONNX opsets to export every graph at (default %(default)s)",
    )
    parser.add_argument(
        "--scratch",
        type=Path,
        help="make the working directory (graphs, checkpoints) in this directory, which the caller "
        "removes even if this process is killed",
    )
    args = parser.parse_args(argv)
    try:
        opsets = tuple(int(o) for o in args.opsets.split(","))
    except ValueError:
        parser.error(f"--opsets takes numbers separated by commas, not {args.opsets!r}")
    if args.config_upstream is not None and args.upstream is None:
        parser.error("--config-upstream goes with --upstream")
    torch.set_grad_enabled(False)
    set_family(args.model)
    overlay = None if args.upstream is None else (args.upstream, args.config_upstream)
    document = run(args.output_dir, overlay, opsets, args.scratch)
    text = json.dumps(document, ensure_ascii=False)
    if args.result:
        args.result.write_text(text + "\n")
    sys.stdout.flush()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
