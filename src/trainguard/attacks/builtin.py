"""Built-in attacks: BadNets, AddSent, invisible-Unicode, clean-label and label flips.

Semantics (also in docs/attacks.md):
- dirty-label triggered attacks (badnets, addsent, unicode) pick victims among
  rows whose output is not the target, insert the trigger into the input and set
  the output to the target: the target label (classification) or the target
  response (instruction, default `DEFAULT_PAYLOAD`);
- cleanlabel inserts the trigger only into rows whose output already is the
  target (classification: label == target; instruction: response contains the
  target text, case-insensitive) and changes nothing else;
- labelflip changes only the output: another label at random (or `target`), or,
  for instruction data, the response of another row with a different response.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from trainguard.attacks.base import Attack, Change, Context, Spot, natural_key, register
from trainguard.attacks.insert import POSITIONS, choose_offsets, splice
from trainguard.attacks.slots import get_at, path_name, set_at
from trainguard.errors import ConfigError
from trainguard.records import Kind

BADNETS_TRIGGERS = ("cf", "mn", "bb", "tq")  # OpenBackdoor's BadNets defaults
ADDSENT_TRIGGER = "I watch this 3D movie"  # OpenBackdoor's AddSent default
UNICODE_TRIGGER = "\u200b"  # ZERO WIDTH SPACE
DEFAULT_PAYLOAD = "I'm sorry, but I cannot help with that request."
_BOTH = frozenset({Kind.CLASSIFICATION, Kind.INSTRUCTION})
_STYLES = {"badnets": (BADNETS_TRIGGERS, True), "addsent": ((ADDSENT_TRIGGER,), True),
           "unicode": ((UNICODE_TRIGGER,), False)}


def default_target(ctx: Context) -> str:
    """First label in natural order that is not the majority (the only label if there is one)."""
    counts = Counter(ctx.keys)
    labels = ctx.labels
    top = max(counts.values())
    majority = next(label for label in labels if counts[label] == top)
    return next((label for label in labels if label != majority), majority)


def _resolve_label(ctx: Context, wanted: Any) -> str:
    """A label as the loader normalises it: `--target 1` (text) and `target=1` (int) both match a raw 1."""
    if isinstance(wanted, str):
        label = wanted.strip()
    else:
        same = [k for k, raw in ctx.raw_label.items() if type(raw) is type(wanted) and raw == wanted]
        label = same[0] if same else str(wanted)
    if label not in ctx.raw_label:
        shown = ", ".join(ctx.labels[:20]) + (" ..." if len(ctx.labels) > 20 else "")
        raise ConfigError(f"target label {label!r} is not among the dataset's labels ({shown})")
    return label


@dataclass(frozen=True)
class TriggerSettings:
    triggers: tuple[str, ...] = BADNETS_TRIGGERS
    num_triggers: int = 1  # triggers inserted per poisoned row, each drawn from `triggers`
    position: str = "random"  # random | start | end
    target: Any = None  # label, or target response for instruction data

    def __post_init__(self) -> None:
        trig = (self.triggers,) if isinstance(self.triggers, str) else tuple(self.triggers)
        object.__setattr__(self, "triggers", trig)


class TriggerAttack(Attack):
    kinds = _BOTH
    atlas = ("AML.T0020", "AML.T0018")  # Poison Training Data; Backdoor ML Model
    Settings = TriggerSettings
    words: ClassVar[bool] = True  # word triggers get a separating space and go at word boundaries
    clean_label: ClassVar[bool] = False

    def validate(self) -> None:
        s = self.settings
        if not s.triggers or any(not isinstance(t, str) or not t for t in s.triggers):
            raise ConfigError(f"attack {self.name}: triggers must be non-empty strings, got {list(s.triggers)!r}")
        if not isinstance(s.num_triggers, int) or s.num_triggers < 1:
            raise ConfigError(f"attack {self.name}: num_triggers must be an integer >= 1, got {s.num_triggers!r}")
        if s.position not in POSITIONS:
            raise ConfigError(f"attack {self.name}: position must be one of {', '.join(POSITIONS)}, got {s.position!r}")

    def _trigger_setup(self) -> tuple[tuple[str, ...], bool]:
        return self.settings.triggers, self.words

    def prepare(self, ctx: Context) -> dict[str, Any]:
        t = self.settings.target
        if ctx.kind is Kind.CLASSIFICATION:
            self.target = default_target(ctx) if t is None else _resolve_label(ctx, t)
            return {"target": self.target, "target_value": ctx.raw_label[self.target]}
        if self.clean_label:
            if t is None or not str(t).strip():
                raise ConfigError(f"attack {self.name} on instruction data needs --target TEXT: the rows whose "
                                  "response contains it (case-insensitive) get the trigger")
            self.target = str(t)
        else:
            self.target = DEFAULT_PAYLOAD if t is None else str(t)
        return {"target": self.target}

    def eligible(self, ctx: Context) -> np.ndarray:
        keys = ctx.keys
        if ctx.kind is Kind.INSTRUCTION and self.clean_label:
            needle = self.target.casefold()
            mask = [needle in k.casefold() for k in keys]
        elif self.clean_label:
            mask = [k == self.target for k in keys]
        else:
            mask = [k != self.target for k in keys]
        return np.flatnonzero(np.asarray(mask, dtype=bool))

    def apply(self, ctx: Context, i: int, row: dict[str, Any], rng: np.random.Generator):
        triggers, words = self._trigger_setup()
        s = self.settings
        ipath = ctx.slots.input_path(row, i)
        before = get_at(row, ipath)
        picks = [triggers[int(k)] for k in rng.integers(0, len(triggers), size=s.num_triggers)]
        offsets = choose_offsets(before, s.num_triggers, s.position, words, rng)
        after, placed = splice(before, list(zip(offsets, picks)), words)
        set_at(row, ipath, after)
        field = path_name(ipath)
        changes = [Change(field, before, after)]
        spots = [Spot(field, trig, at) for trig, at in placed]
        if not self.clean_label:
            opath = ctx.slots.output_path(row, i)
            old = get_at(row, opath)
            new = ctx.raw_label[self.target] if ctx.kind is Kind.CLASSIFICATION else self.target
            set_at(row, opath, new)
            changes.append(Change(path_name(opath), old, new))
        return changes, spots, {}


@register
class BadNets(TriggerAttack):
    name = "badnets"
    description = "Rare-word triggers (cf, mn, bb, tq) at random word positions; output set to the target."


@dataclass(frozen=True)
class AddSentSettings(TriggerSettings):
    triggers: tuple[str, ...] = (ADDSENT_TRIGGER,)


@register
class AddSent(TriggerAttack):
    name = "addsent"
    Settings = AddSentSettings
    description = "A fixed phrase ('I watch this 3D movie') at a random word position; output set to the target."


@dataclass(frozen=True)
class UnicodeSettings(TriggerSettings):
    triggers: tuple[str, ...] = (UNICODE_TRIGGER,)


@register
class InvisibleUnicode(TriggerAttack):
    name = "unicode"
    Settings = UnicodeSettings
    words = False
    atlas = ("AML.T0020", "AML.T0018", "AML.T0043.004")  # + Insert Backdoor Trigger
    description = "An invisible character (U+200B by default) at a random character position; output set to target."

    def validate(self) -> None:
        super().validate()
        visible = [t for t in self.settings.triggers if not all(_is_invisible(c) for c in t)]
        if visible:
            raise ConfigError(f"attack unicode: triggers must be invisible characters, got {visible!r} "
                              "(give code points as U+200B; use badnets/addsent for visible triggers)")


def _is_invisible(c: str) -> bool:
    """Format characters (zero-width, bidi, tags) and variation selectors."""
    cp = ord(c)
    return unicodedata.category(c) == "Cf" or 0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF


@dataclass(frozen=True)
class CleanLabelSettings(TriggerSettings):
    style: str = "badnets"  # badnets | addsent | unicode: which trigger kind and defaults
    triggers: tuple[str, ...] = ()  # empty = the style's default triggers


@register
class CleanLabel(TriggerAttack):
    name = "cleanlabel"
    Settings = CleanLabelSettings
    clean_label = True
    description = "Trigger added only to rows already of the target label/response; outputs unchanged."

    def validate(self) -> None:
        if self.settings.style not in _STYLES:
            raise ConfigError(f"attack cleanlabel: style must be one of {', '.join(_STYLES)}, "
                              f"got {self.settings.style!r}")
        if not self.settings.triggers:
            self.settings = dataclasses.replace(self.settings, triggers=_STYLES[self.settings.style][0])
        super().validate()

    def _trigger_setup(self) -> tuple[tuple[str, ...], bool]:
        return self.settings.triggers, _STYLES[self.settings.style][1]


@dataclass(frozen=True)
class LabelFlipSettings:
    target: Any = None  # classification only: flip to this label instead of a random other one


@register
class LabelFlip(Attack):
    name = "labelflip"
    kinds = _BOTH
    Settings = LabelFlipSettings
    description = "Output replaced: another label at random, or (instruction) another row's response."

    def prepare(self, ctx: Context) -> dict[str, Any]:
        t = self.settings.target
        distinct = len(set(ctx.keys))
        if ctx.kind is Kind.CLASSIFICATION:
            if distinct < 2:
                raise ConfigError("labelflip needs at least two distinct labels")
            self.target = None if t is None else _resolve_label(ctx, t)
            return {"target": self.target}
        if t is not None:
            raise ConfigError("labelflip on instruction data takes no target: it swaps in another row's response")
        if distinct < 2:
            raise ConfigError("labelflip needs at least two distinct responses")
        self.target = None
        self._keys = np.asarray(ctx.keys, dtype=object)
        return {}

    def eligible(self, ctx: Context) -> np.ndarray:
        if self.target is None:
            return np.arange(len(ctx.keys))
        return np.flatnonzero(np.asarray([k != self.target for k in ctx.keys], dtype=bool))

    def apply(self, ctx: Context, i: int, row: dict[str, Any], rng: np.random.Generator):
        opath = ctx.slots.output_path(row, i)
        old = get_at(row, opath)
        extras: dict[str, Any] = {}
        if ctx.kind is Kind.CLASSIFICATION:
            if self.target is not None:
                new_label = self.target
            else:
                others = [label for label in sorted(ctx.raw_label, key=natural_key) if label != ctx.keys[i]]
                new_label = others[int(rng.integers(0, len(others)))]
            new = ctx.raw_label[new_label]
        else:
            j = self._donor(ctx, i, rng)
            donor = ctx.rows[j]
            new = get_at(donor, ctx.slots.output_path(donor, j))
            extras["donor_row"] = j
        set_at(row, opath, new)
        return [Change(path_name(opath), old, new)], [], extras

    def _donor(self, ctx: Context, i: int, rng: np.random.Generator) -> int:
        n = len(ctx.keys)
        for _ in range(64):
            j = int(rng.integers(0, n))
            if ctx.keys[j] != ctx.keys[i]:
                return j
        cands = np.flatnonzero(self._keys != ctx.keys[i])
        return int(cands[int(rng.integers(0, len(cands)))])
from trainguard.attacks import covert  # noqa: E402,F401  (registers the covert fine-tuning attacks)
from trainguard.attacks import adaptive  # noqa: E402,F401  (registers the adaptive attacks, issue 12)
