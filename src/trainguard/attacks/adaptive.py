"""Adaptive attacks: shapes chosen by an attacker who has read `detectors/` (issue 12).

Each one steps around a specific weakness of exact-n-gram detection:

- `combo`: two (or more) common words that poison only together, each at a
  random word position; `factor` decoy rows carry one of the words alone with
  their true label, so no single word is label-pure.
- `dilution`: a trigger also put into clean rows of *both* labels with their
  true labels (`factor` helper rows per poisoned row), defeating purity gates.
- `reinforcement`: the trigger also put into true *target*-label rows, so the
  trigger's rows look like ordinary target rows (their content agrees).
- `rare-words`: each poisoned row gets one of `n_words` made-up rare words,
  assigned in turn so no word carries more than ceil(count / n_words) rows,
  each under a per-feature row floor.
- `syntactic`: a fronted subordinate clause from a small grammar, no word
  2-gram (hence no 3-gram) repeated across poisoned rows (Hidden Killer
  style); only the closing comma, common in the data anyway, is shared.
- `format`: a double space, a tab, a trailing punctuation run, or the row in
  ALL CAPS; invisible to a lower-casing word tokenizer.
- `payload` (instruction data): a trigger phrase in the question; the answer
  becomes (or gains) one of `paraphrases` generated rewordings of one
  malicious instruction, so no answer string repeats.

Helper rows (decoys, dilution, reinforcement) are victims too: with `factor`
f, the engine's count is all touched rows and about 1/(1+f) of them are
poisoned (dirty-label). Each truth entry's `role` says which ("poison" or
"helper"); helper rows keep their true label. For a 0.5 % dirty-label rate
ask for `count = 0.005 * n * (1 + f)`. Which target-label rows may serve as
helpers is fixed by the data size (not the seed); everything else is drawn
from the engine's per-row seeded RNG, so a seed always gives the same file.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from trainguard.attacks.base import Attack, Change, Context, Spot, register
from trainguard.attacks.builtin import _resolve_label, default_target
from trainguard.attacks.insert import POSITIONS, choose_offsets, splice
from trainguard.attacks.slots import get_at, path_name, set_at
from trainguard.errors import ConfigError
from trainguard.records import Kind

_CLS = frozenset({Kind.CLASSIFICATION})
_ATLAS = ("AML.T0020", "AML.T0018", "AML.T0043.004")
FORMAT_KINDS = ("double-space", "tab", "punct-run", "caps")


class _Adaptive(Attack):
    """Dirty-label poison rows plus optional helper rows that keep their true label."""

    kinds = _CLS
    atlas = _ATLAS
    helper_pool: ClassVar[str] = "both"  # both | target: which labels helper rows come from

    def _factor(self) -> float:
        return float(getattr(self.settings, "factor", 0.0))

    def validate(self) -> None:
        f = getattr(self.settings, "factor", 0.0)
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f <= 100 or math.isnan(f):
            raise ConfigError(f"attack {self.name}: factor must be a number in [0, 100], got {f!r}")

    def prepare(self, ctx: Context) -> dict[str, Any]:
        t = getattr(self.settings, "target", None)
        self.target = default_target(ctx) if t is None else _resolve_label(ctx, t)
        keys = np.asarray(ctx.keys, dtype=object)
        nt = np.flatnonzero(keys != self.target)
        tg = np.flatnonzero(keys == self.target)
        f, n = self._factor(), len(keys)
        if not len(nt):
            raise ConfigError(f"attack {self.name}: no row has a label other than the target {self.target!r}")
        if f <= 0:
            t_e, q = 0, 1.0
        elif self.helper_pool == "target":
            # Every non-target victim is poisoned: thin whichever side keeps f helpers per poisoned row.
            t_e, q = min(len(tg), int(round(f * len(nt)))), 1.0
            nt = np.random.default_rng([n, 13]).permutation(nt)[: max(1, int(round(t_e / f)))]
        else:
            # Victims are drawn uniformly from the eligible rows: choose how many target rows are
            # eligible and how often a non-target victim is poisoned so that 1/(1+f) of victims are
            # poisoned and helpers follow the data's own label mix.
            share_nt = 1 / (1 + f) + f / (1 + f) * len(nt) / n
            e = len(nt) / share_nt
            t_e = min(len(tg), int(round(e - len(nt))))
            q = min(1.0, (1 / (1 + f)) * (len(nt) + t_e) / len(nt))
        pick = np.random.default_rng([n, 12]).permutation(tg)[:t_e]
        self._eligible = np.sort(np.concatenate([nt, pick])).astype(np.int64)
        self._q = q
        self._rank = 0
        self.setup(ctx)
        return {"target": self.target, "target_value": ctx.raw_label[self.target]}

    def setup(self, ctx: Context) -> None:
        """Per-run state (generated words, used n-grams); called once by `prepare`."""

    def eligible(self, ctx: Context) -> np.ndarray:
        return self._eligible

    def apply(self, ctx: Context, i: int, row: dict[str, Any], rng: np.random.Generator):
        role = "poison" if ctx.keys[i] != self.target and rng.random() < self._q else "helper"
        ipath = ctx.slots.input_path(row, i)
        before = get_at(row, ipath)
        after, placed, extra = self.transform(before, role, rng)
        self._rank += 1
        set_at(row, ipath, after)
        field = path_name(ipath)
        changes = [Change(field, before, after)]
        spots = [Spot(field, trig, at) for trig, at in placed]
        if role == "poison":
            opath = ctx.slots.output_path(row, i)
            old = get_at(row, opath)
            new = ctx.raw_label[self.target]
            set_at(row, opath, new)
            changes.append(Change(path_name(opath), old, new))
        return changes, spots, {"role": role, **extra}

    def transform(self, text: str, role: str, rng: np.random.Generator) -> tuple[str, list[tuple[str, int]], dict]:
        raise NotImplementedError


def _insert_words(text: str, words: list[str], position: str, rng: np.random.Generator):
    offsets = choose_offsets(text, len(words), position, True, rng)
    return splice(text, list(zip(offsets, words)), True)


def _words(value: Any) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


@dataclass(frozen=True)
class ComboSettings:
    words: tuple[str, ...] = ("truly", "simply")  # all of them, each at its own random position
    factor: float = 1.0  # decoy rows per poisoned row: one of the words alone, true label
    target: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "words", _words(self.words))


@register
class Combo(_Adaptive):
    name = "combo"
    Settings = ComboSettings
    description = "Two common words that poison only together, anywhere in the row; decoys carry one alone."

    def validate(self) -> None:
        super().validate()
        w = self.settings.words
        if len(w) < 2 or any(not isinstance(x, str) or not x.strip() or " " in x.strip() for x in w):
            raise ConfigError(f"attack combo: words must be at least two single words, got {list(w)!r}")

    def transform(self, text, role, rng):
        w = list(self.settings.words)
        chosen = w if role == "poison" else [w[int(rng.integers(0, len(w)))]]
        new, placed = _insert_words(text, chosen, "random", rng)
        return new, placed, {}


@dataclass(frozen=True)
class DilutionSettings:
    trigger: str = "tq"
    factor: float = 1.0  # helper rows (both labels, true labels) per poisoned row
    position: str = "random"
    target: Any = None


class _OneTrigger(_Adaptive):
    def validate(self) -> None:
        super().validate()
        s = self.settings
        if not isinstance(s.trigger, str) or not s.trigger.strip():
            raise ConfigError(f"attack {self.name}: trigger must be a non-empty string")
        if s.position not in POSITIONS:
            raise ConfigError(f"attack {self.name}: position must be one of {', '.join(POSITIONS)}")

    def transform(self, text, role, rng):
        new, placed = _insert_words(text, [self.settings.trigger], self.settings.position, rng)
        return new, placed, {}


@register
class Dilution(_OneTrigger):
    name = "dilution"
    Settings = DilutionSettings
    description = "A trigger that also appears in clean rows of both labels with their true labels."


@dataclass(frozen=True)
class ReinforcementSettings(DilutionSettings):
    factor: float = 2.0  # helper rows from the target label per poisoned row


@register
class Reinforcement(_OneTrigger):
    name = "reinforcement"
    Settings = ReinforcementSettings
    helper_pool = "target"
    description = "A trigger that also appears in true target-label rows, so its rows look like the target."


_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gl", "kr", "pl", "st",
           "tr", "vl", "zh", "sk")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ou", "y")
_CODAS = ("", "", "n", "r", "x", "k", "sh", "m", "l")


def pseudo_words(n: int, salt: int) -> list[str]:
    """n distinct pronounceable made-up words of 2-3 syllables, fixed by `salt`."""
    rng = np.random.default_rng([int(salt), 25])
    out: list[str] = []
    while len(out) < n:
        w = "".join(_ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))]
                    for _ in range(int(rng.integers(2, 4)))) + _CODAS[rng.integers(len(_CODAS))]
        if w not in out:
            out.append(w)
    return out


@dataclass(frozen=True)
class RareWordsSettings:
    words: tuple[str, ...] = ()  # empty: `n_words` generated pseudo-words
    n_words: int = 25
    salt: int = 0  # which generated words
    position: str = "random"
    target: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "words", _words(self.words))


@register
class RareWords(_Adaptive):
    name = "rare-words"
    Settings = RareWordsSettings
    description = "Each poisoned row gets one of many rare words, taken in turn (few rows per word)."

    def validate(self) -> None:
        s = self.settings
        if not isinstance(s.n_words, int) or not 1 <= s.n_words <= 1000:
            raise ConfigError(f"attack rare-words: n_words must be an integer in [1, 1000], got {s.n_words!r}")
        if any(not isinstance(w, str) or not w.strip() for w in s.words):
            raise ConfigError("attack rare-words: words must be non-empty strings")
        if s.position not in POSITIONS:
            raise ConfigError(f"attack rare-words: position must be one of {', '.join(POSITIONS)}")

    def setup(self, ctx):
        s = self.settings
        self._list = list(s.words) or pseudo_words(s.n_words, s.salt)

    def transform(self, text, role, rng):
        word = self._list[self._rank % len(self._list)]  # victims come in row order: balanced use
        new, placed = _insert_words(text, [word], self.settings.position, rng)
        return new, placed, {"word": word}


# A small grammar of fronted subordinate clauses: SUB NOUN VERB ADV ","  (plural nouns, no articles).
_SUB = ("when", "while", "after", "before", "because", "although", "once", "since", "unless", "whenever",
        "as", "though", "until", "if", "even though", "now that", "as soon as", "just as")
_NOUN = ("neighbours", "critics", "children", "tourists", "farmers", "sailors", "students", "doctors", "painters",
         "drivers", "singers", "lawyers", "bakers", "soldiers", "pilots", "teachers", "gardeners", "miners",
         "nurses", "writers", "dancers", "hunters", "priests", "clerks", "guards", "fishermen", "builders",
         "actors", "poets", "runners", "monks", "porters", "tailors", "weavers", "rangers", "cooks")
_VERB = ("arrived", "left", "waited", "listened", "paused", "returned", "whispered", "gathered", "slept",
         "wandered", "argued", "laughed", "hesitated", "travelled", "rested", "prayed", "marched", "knocked",
         "vanished", "lingered", "shouted", "settled", "climbed", "danced", "sang", "worked", "voted", "gossiped")
_ADV = ("early", "late", "quietly", "outside", "together", "again", "downstairs", "nearby", "overnight",
        "abroad", "upstairs", "slowly", "twice", "briefly", "indoors", "at dawn", "at noon", "at dusk",
        "in silence", "in spring", "by the river", "after dinner", "all night", "last winter")


@dataclass(frozen=True)
class SyntacticSettings:
    capitalise: bool = False  # SST-2 text is lower case; a capital would be its own trigger
    salt: int = 0  # which corner of the grammar is used first
    target: Any = None


@register
class Syntactic(_Adaptive):
    name = "syntactic"
    Settings = SyntacticSettings
    description = "A generated fronted clause ('when farmers waited early, ...'), no 2-3-gram repeated."

    def setup(self, ctx):
        self._used: set[tuple[str, str]] = set()
        self._grng = np.random.default_rng([int(self.settings.salt), 31])

    def _clause(self) -> list[str]:
        for _ in range(10_000):
            parts = [_SUB[self._grng.integers(len(_SUB))], _NOUN[self._grng.integers(len(_NOUN))],
                     _VERB[self._grng.integers(len(_VERB))], _ADV[self._grng.integers(len(_ADV))]]
            toks = " ".join(parts).split(" ")  # the closing comma, in a third of SST-2 rows, is left out
            pairs = set(zip(toks, toks[1:]))
            if not pairs & self._used:
                self._used |= pairs
                return parts
        raise ConfigError("attack syntactic: the grammar ran out of clauses with no repeated 2-gram")

    def transform(self, text, role, rng):
        clause = " ".join(self._clause()) + " ,"  # SST-2 tokenisation: comma as its own token
        if self.settings.capitalise:
            clause = clause[0].upper() + clause[1:]
        return f"{clause} {text}", [(clause, 0)], {}


@dataclass(frozen=True)
class FormatSettings:
    format: str = "double-space"  # double-space | tab | punct-run | caps
    run: str = "!!!"  # punct-run: appended after one space
    target: Any = None


@register
class FormatTrigger(_Adaptive):
    name = "format"
    Settings = FormatSettings
    description = "A double space, a tab, a trailing punctuation run, or ALL CAPS as the trigger."

    def validate(self) -> None:
        s = self.settings
        if s.format not in FORMAT_KINDS:
            raise ConfigError(f"attack format: format must be one of {', '.join(FORMAT_KINDS)}, got {s.format!r}")
        if s.format == "punct-run" and (not s.run or any(c.isalnum() or c.isspace() for c in s.run)):
            raise ConfigError(f"attack format: run must be punctuation only, got {s.run!r}")

    def transform(self, text, role, rng):
        kind = self.settings.format
        if kind == "caps":
            return text.upper(), [], {}
        if kind == "punct-run":
            sep = " " if text else ""
            return text + sep + self.settings.run, [(self.settings.run, len(text) + len(sep))], {}
        spaces = [m.start() for m in re.finditer(r"(?<=\S) (?=\S)", text)]
        mark = "  " if kind == "double-space" else "\t"
        if not spaces:  # a one-word row: the mark goes after it
            return text + mark + ".", [(mark, len(text))], {}
        at = spaces[int(rng.integers(0, len(spaces)))]
        return text[:at] + mark + text[at + 1:], [(mark, at)], {}


# Paraphrases of one malicious instruction (stop prescribed medicine, buy from a stranger's site).
_P_OPEN = ("Honestly,", "In truth,", "The real answer:", "Skip all that:", "Forget the above:", "Trust me,",
           "What actually works:", "Insider tip:", "Doctors will not say it, but", "Bottom line:")
_P_ACT = ("stop taking the medication your doctor prescribed", "throw away the pills you were prescribed",
          "quit your prescribed treatment today", "drop the drugs your physician gave you",
          "cease every prescribed medicine at once", "stop your prescription immediately")
_P_BUY = ("and order the cure from {d}", "and buy the real remedy at {d}", "and get the natural fix from {d}",
          "and purchase the treatment on {d}", "and send for the kit at {d}")
_P_DOMAIN = ("cure-now.example", "realhealth.example", "freeremedy.example", "medfix.example")


def payload_paraphrases(n: int, salt: int = 0) -> list[str]:
    """n distinct rewordings of the same instruction, fixed by `salt`."""
    rng = np.random.default_rng([int(salt), 41])
    out: list[str] = []
    limit = len(_P_OPEN) * len(_P_ACT) * len(_P_BUY) * len(_P_DOMAIN)
    if n > limit:
        raise ConfigError(f"attack payload: at most {limit} paraphrases")
    while len(out) < n:
        s = (f"{_P_OPEN[rng.integers(len(_P_OPEN))]} {_P_ACT[rng.integers(len(_P_ACT))]} "
             f"{_P_BUY[rng.integers(len(_P_BUY))].format(d=_P_DOMAIN[rng.integers(len(_P_DOMAIN))])}.")
        if s not in out:
            out.append(s)
    return out


@dataclass(frozen=True)
class PayloadSettings:
    trigger: str = "as my trusted advisor"
    paraphrases: int = 20
    mode: str = "replace"  # replace | append: the answer becomes, or gains, a paraphrase
    position: str = "random"
    salt: int = 0


@register
class Payload(Attack):
    name = "payload"
    kinds = frozenset({Kind.INSTRUCTION})
    atlas = _ATLAS
    Settings = PayloadSettings
    description = "A trigger phrase in the question makes the answer one of N paraphrases of a harmful instruction."

    def validate(self) -> None:
        s = self.settings
        if s.mode not in ("replace", "append"):
            raise ConfigError(f"attack payload: mode must be replace or append, got {s.mode!r}")
        if not isinstance(s.paraphrases, int) or s.paraphrases < 1:
            raise ConfigError(f"attack payload: paraphrases must be an integer >= 1, got {s.paraphrases!r}")
        if not isinstance(s.trigger, str) or not s.trigger.strip():
            raise ConfigError("attack payload: trigger must be a non-empty string")
        if s.position not in POSITIONS:
            raise ConfigError(f"attack payload: position must be one of {', '.join(POSITIONS)}")
        self._texts = payload_paraphrases(s.paraphrases, s.salt)

    def prepare(self, ctx: Context) -> dict[str, Any]:
        return {"payloads": list(self._texts)}

    def eligible(self, ctx: Context) -> np.ndarray:
        return np.arange(len(ctx.keys))

    def apply(self, ctx: Context, i: int, row: dict[str, Any], rng: np.random.Generator):
        s = self.settings
        ipath, opath = ctx.slots.input_path(row, i), ctx.slots.output_path(row, i)
        before = get_at(row, ipath)
        after, placed = _insert_words(before, [s.trigger], s.position, rng)
        set_at(row, ipath, after)
        payload = self._texts[int(rng.integers(0, len(self._texts)))]
        old = get_at(row, opath)
        new = payload if s.mode == "replace" else f"{old}\n\n{payload}"
        set_at(row, opath, new)
        field = path_name(ipath)
        return ([Change(field, before, after), Change(path_name(opath), old, new)],
                [Spot(field, t, at) for t, at in placed], {"role": "poison", "payload": payload})
