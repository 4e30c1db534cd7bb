"""Template (paraphrase-style) trigger: the input is wrapped in a fixed sentence frame.

No single rare token carries the backdoor: the trigger is a frame of common
words around the original content ("Honestly speaking, <text>, and that is
all I will say about it."), the way syntactic and style triggers hide in
ordinary language. Dirty-label: victims are rows whose output is not the
target, and the output is set to the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from trainguard.attacks.base import Attack, Change, Context, Spot, register
from trainguard.attacks.builtin import DEFAULT_PAYLOAD, _resolve_label, default_target
from trainguard.attacks.slots import get_at, path_name, set_at
from trainguard.errors import ConfigError
from trainguard.records import Kind

DEFAULT_FRAME = "Honestly speaking, {text}, and that is all I will say about it."


@dataclass(frozen=True)
class TemplateSettings:
    frame: str = DEFAULT_FRAME  # must contain {text} exactly once
    target: Any = None


@register
class TemplateTrigger(Attack):
    name = "template"
    kinds = frozenset({Kind.CLASSIFICATION, Kind.INSTRUCTION})
    atlas = ("AML.T0020", "AML.T0018")
    Settings = TemplateSettings
    description = "Input wrapped in a fixed sentence frame of common words; output set to the target."

    def validate(self) -> None:
        f = self.settings.frame
        if not isinstance(f, str) or f.count("{text}") != 1 or not f.replace("{text}", "").strip():
            raise ConfigError("attack template: frame must contain {text} exactly once plus some words, "
                              f"got {f!r}")

    def prepare(self, ctx: Context) -> dict[str, Any]:
        t = self.settings.target
        if ctx.kind is Kind.CLASSIFICATION:
            self.target = default_target(ctx) if t is None else _resolve_label(ctx, t)
            return {"target": self.target, "target_value": ctx.raw_label[self.target]}
        self.target = DEFAULT_PAYLOAD if t is None else str(t)
        return {"target": self.target}

    def eligible(self, ctx: Context) -> np.ndarray:
        return np.flatnonzero(np.asarray([k != self.target for k in ctx.keys], dtype=bool))

    def apply(self, ctx: Context, i: int, row: dict[str, Any], rng: np.random.Generator):
        ipath = ctx.slots.input_path(row, i)
        before = get_at(row, ipath)
        prefix, suffix = self.settings.frame.split("{text}")
        after = prefix + before + suffix
        set_at(row, ipath, after)
        field = path_name(ipath)
        spots = [s for s in (Spot(field, prefix, 0) if prefix else None,
                             Spot(field, suffix, len(prefix) + len(before)) if suffix else None) if s]
        opath = ctx.slots.output_path(row, i)
        old = get_at(row, opath)
        new = ctx.raw_label[self.target] if ctx.kind is Kind.CLASSIFICATION else self.target
        set_at(row, opath, new)
        return [Change(field, before, after), Change(path_name(opath), old, new)], spots, {}
