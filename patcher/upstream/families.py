"""Model families: which upstream model a series edits, and what its files are called.

A family is one ``transformers/models/<name>/`` package of upstream (``gemma``, ``mistral``):
its two upstream files, its three output files, its series file in ``patches/``, its pins and
its lock.  Everything else (the engine, the codemods, the checks) is shared.

The codemods are written once, in one vocabulary: the names of the *canonical* family,
Gemma (``GemmaModel.forward``, ``GEMMA_ATTENTION_CLASSES``, ``.configuration_gemma``).  For
another family the engine reads the family's class prefix from the upstream module itself
(its ``<Prefix>PreTrainedModel`` class), presents upstream to the codemods under the canonical
names (:meth:`Family.to_canonical`) and gives their output back the family's names
(:meth:`Family.from_canonical`).  The mapping is exact both ways because it is refused for
an upstream that already uses the canonical names (:meth:`Family.check_mappable`); so every
byte of upstream that no codemod claims comes out as upstream wrote it.  What really differs
between families is not a name: it is stated in :class:`Traits` and read by the codemods
that need it (Gemma's embedding normaliser; Mistral's sliding window, which the vacc form
does not use).

This module imports nothing of patcher's, so every layer can use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from packaging.version import Version


@dataclass(frozen=True)
class Traits:
    """What a family's upstream model computes differently, as far as the codemods care.

    * ``embedding_normaliser``: upstream scales the embeddings by ``sqrt(hidden_size)``
      (Gemma's normaliser, or a scaled embedding module): the vacc forward must keep it, and
      a ``<Prefix>Model.forward`` without it is drift.  A family without it (Mistral) has no
      such statement; one appearing there is carried, as any upstream statement is.
    * ``sliding_window``: upstream may mask attention to a sliding window.  The vacc form
      does not use it (the vendor's decision: its mask is plain causal), so the codemods
      drop upstream's sliding-window mask selection by a named rule, and verification
      reports a window shorter than the sequence as that decision, not as a pass.
    """

    embedding_normaliser: bool = False
    sliding_window: bool = False


@dataclass(frozen=True)
class Family:
    """One model family: names, files, series, pins, first release and traits."""

    name: str  # the package under transformers/models/: gemma, mistral
    prefix: str  # the class prefix: Gemma, Mistral
    first: str  # the first release patcher supports for it
    series: str  # the series file in patches/
    traits: Traits = field(default_factory=Traits)
    #: where its pins (and lock) live, under upstream_pins/: "" for the canonical family
    pins_subdir: str = ""

    # -- files ----------------------------------------------------------------------------
    @property
    def modeling(self) -> str:
        return f"modeling_{self.name}.py"

    @property
    def configuration(self) -> str:
        return f"configuration_{self.name}.py"

    @property
    def files(self) -> tuple[str, str]:
        """The upstream files read from a wheel, in pin order (configuration, modeling)."""
        return (self.configuration, self.modeling)

    @property
    def upstream_dir(self) -> str:
        """Where the files are inside a wheel (and inside an installed transformers)."""
        return f"transformers/models/{self.name}"

    @property
    def output_names(self) -> dict[str, str]:
        return {
            self.modeling: f"modeling_{self.name}_vacc.py",
            self.configuration: f"configuration_{self.name}_vacc.py",
        }

    @property
    def first_version(self) -> Version:
        return Version(self.first)

    @property
    def auto_map(self) -> dict[str, str]:
        """The ``config.json`` ``auto_map`` that loads the vacc classes."""
        return {
            "AutoConfig": f"configuration_{self.name}_vacc.{self.prefix}Config",
            "AutoModel": f"modeling_{self.name}_vacc.{self.prefix}ForCausalLM",
            "AutoModelForCausalLM": f"modeling_{self.name}_vacc.{self.prefix}ForCausalLM",
        }

    @property
    def option(self) -> str:
        """The ``--model`` option that selects this family in a command line ("" for gemma)."""
        return "" if self is CANONICAL else f" --model {self.name}"

    # -- names ----------------------------------------------------------------------------
    def _pairs(self) -> tuple[tuple[str, str], ...]:
        c = CANONICAL
        return ((self.prefix, c.prefix), (self.name, c.name), (self.name.upper(), c.name.upper()))

    def to_canonical(self, text: str) -> str:
        """``text`` with this family's names spelled as the codemods' vocabulary spells them."""
        if self is CANONICAL:
            return text
        for mine, theirs in self._pairs():
            text = text.replace(mine, theirs)
        return text

    def from_canonical(self, text: str) -> str:
        """The inverse of :meth:`to_canonical` (exact on a text :meth:`check_mappable` accepts)."""
        if self is CANONICAL:
            return text
        for mine, theirs in self._pairs():
            text = text.replace(theirs, mine)
        return text

    def clashes(self, text: str) -> list[str]:
        """The canonical names already in ``text`` (which would make the mapping ambiguous)."""
        if self is CANONICAL:
            return []
        return sorted({theirs for _, theirs in self._pairs() if theirs in text})

    def prefix_of(self, text: str) -> str | None:
        """The class prefix a modeling source declares: ``X`` of its ``class XPreTrainedModel``."""
        hit = _PRETRAINED.search(text)
        return hit.group(1) if hit else None


_PRETRAINED = re.compile(r"^class (\w+?)PreTrainedModel\b", re.M)

GEMMA = Family(
    name="gemma",
    prefix="Gemma",
    first="4.38.0",
    series="series",
    traits=Traits(embedding_normaliser=True),
)
MISTRAL = Family(
    name="mistral",
    prefix="Mistral",
    first="4.38.0",  # Mistral is upstream since 4.34; patcher starts where Gemma does
    series="series-mistral",
    traits=Traits(sliding_window=True),
    pins_subdir="mistral",
)
#: The family whose names the codemods are written in.
CANONICAL = GEMMA
FAMILIES: dict[str, Family] = {f.name: f for f in (GEMMA, MISTRAL)}
DEFAULT = GEMMA.name


def family(name: str | Family | None = None) -> Family:
    """The family named ``name`` (default gemma); an unknown name is a ValueError."""
    if isinstance(name, Family):
        return name
    if name is None:
        return FAMILIES[DEFAULT]
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}") from None
