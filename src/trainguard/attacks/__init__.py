"""Reproducible data-poisoning simulators that write their own ground truth.

    from trainguard.attacks import poison, poison_file
    result = poison(rows, "badnets", rate=0.01, seed=7)   # raw dicts in, raw dicts out
    result.poisoned_rows, result.truth

Schema of the truth file and the exact semantics of each attack: docs/attacks.md.
"""

from trainguard.attacks.base import Attack, Change, Context, Spot, get, register, registry
from trainguard.attacks.builtin import (
    ADDSENT_TRIGGER, BADNETS_TRIGGERS, DEFAULT_PAYLOAD, UNICODE_TRIGGER, default_target,
)
from trainguard.attacks.engine import TRUTH_SCHEMA, PoisonResult, poison, resolve_count
from trainguard.attacks.files import poison_file
from trainguard.attacks.insert import decode_trigger, describe

__all__ = [
    "ADDSENT_TRIGGER", "BADNETS_TRIGGERS", "DEFAULT_PAYLOAD", "TRUTH_SCHEMA", "UNICODE_TRIGGER", "Attack", "Change",
    "Context", "PoisonResult", "Spot", "decode_trigger", "default_target", "describe", "get", "poison",
    "poison_file", "register", "registry", "resolve_count",
]
