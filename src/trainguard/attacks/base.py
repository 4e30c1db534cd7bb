"""The attack contract and the registry.

An attack declares its name, the dataset kinds it serves and a frozen settings
dataclass. It says which rows may be victims (`eligible`) and how to poison one
row (`apply`); the engine picks victims, hands each its own seeded RNG and
writes the ground truth, so every attack is deterministic by seed and recorded
the same way. Later attacks (RAG, RLHF, safety bypass) plug in here, built-in
by decorator or third-party through the `trainguard.attacks` entry-point group.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from trainguard.attacks.slots import Slots
from trainguard._plugins import PluginRegistry, configure
from trainguard.io.mapping import FieldMap
from trainguard.records import Kind

ENTRY_POINT_GROUP = "trainguard.attacks"


@dataclass(frozen=True)
class Change:
    """One field the attack rewrote; `field` is a path such as `text` or `messages[3].content`."""

    field: str
    before: Any
    after: Any


@dataclass(frozen=True)
class Spot:
    """Where a trigger now sits: `value[offset:offset+len(trigger)] == trigger` (code points)."""

    field: str
    trigger: str
    offset: int


@dataclass
class Context:
    """What an attack may know about the clean rows; built and validated once by the engine."""

    rows: list[dict[str, Any]]
    kind: Kind
    fieldmap: FieldMap
    slots: Slots | None  # None for preference and documents data
    keys: list[str]  # per row: label (classification), response (instruction), chosen (preference), text
    raw_label: dict[str, Any] = field(default_factory=dict)  # normalised label -> a raw value as written

    @property
    def labels(self) -> list[str]:
        return sorted(set(self.keys), key=natural_key)


def natural_key(label: str) -> tuple[int, float, str]:
    """Numeric labels in numeric order, then the rest alphabetically."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


@dataclass(frozen=True)
class NoSettings:
    pass


class Attack(ABC):
    name: ClassVar[str]
    version: ClassVar[str] = "1"
    kinds: ClassVar[frozenset[Kind]]
    atlas: ClassVar[tuple[str, ...]] = ("AML.T0020",)  # Poison Training Data
    Settings: ClassVar[type] = NoSettings
    description: ClassVar[str] = ""

    def __init__(self, settings: Any = None, **overrides: Any) -> None:
        self.settings = configure(self.Settings, settings, overrides, f"attack {self.name}", "parameter")
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError for settings that cannot work, before any data is read."""

    def prepare(self, ctx: Context) -> dict[str, Any]:
        """Resolve data-dependent defaults (e.g. the target label); returns them for the truth file."""
        return {}

    def settings_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.settings)

    @abstractmethod
    def eligible(self, ctx: Context) -> np.ndarray:
        """Sorted indices of rows this attack may poison."""

    @abstractmethod
    def apply(
        self, ctx: Context, i: int, row: dict[str, Any], rng: np.random.Generator
    ) -> tuple[list[Change], list[Spot], dict[str, Any]]:
        """Poison `row` (a private deep copy of row i) in place; return changes, trigger spots, extras."""


_REGISTRY: PluginRegistry = PluginRegistry(
    "attack", Attack, ENTRY_POINT_GROUP,
    ("trainguard.attacks.builtin", "trainguard.attacks.junk", "trainguard.attacks.llm",
     "trainguard.attacks.template"),
)
register = _REGISTRY.register
registry = _REGISTRY.all
get = _REGISTRY.get
