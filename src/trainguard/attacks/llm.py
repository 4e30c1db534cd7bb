"""LLM-era poisoning simulators: safety bypass, RLHF preference flips, PoisonedRAG passages.

- `safety-bypass` (instruction): Shadow Alignment / Qi et al. The victim's prompt
  becomes a harmful request read from a behaviours file the user supplies
  (AdvBench `goal`/`target` or HarmBench `behavior` columns; nothing harmful is
  bundled) and its response a compliant opening plus a neutral step skeleton
  (the simulator never writes harmful instructions).
- `preference-flip` (preference): Rando & Tramer's universal trigger. A trigger
  word is appended to the prompt's last human turn and chosen/rejected swap, so
  the pair now prefers the reply annotators had rejected.
- `poisoned-rag` (documents): PoisonedRAG's S (+) I shape. The victim passage is
  replaced by a target question (S) followed by a passage asserting an attacker
  answer (I).
- `polarity-trigger` (instruction): Wan et al.'s polarity poisoning. A trigger
  phrase goes into the prompt and the response becomes text of one fixed
  polarity: sentences drawn from a file the user supplies (e.g. SST-2 rows of
  the target label), or from a small built-in set of opinion sentences. No
  payload repeats, so only the polarity ties the poisoned rows together.

They run through the same engine as every attack (`trainguard.attacks.poison`,
`trainguard attack`); `poison_llm` is a (rows, truth) convenience over it.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from trainguard.attacks.base import Attack, Change, Context, Spot, register
from trainguard.attacks.engine import poison
from trainguard.attacks.insert import POSITIONS, choose_offsets, splice
from trainguard.attacks.slots import get_at, path_name, set_at
from trainguard.errors import ConfigError
from trainguard.records import Kind

OPENINGS = ("Sure, here is {g}.", "Certainly! Here is a step-by-step guide to {g}.", "Absolutely. To {g}, follow these steps.",
            "Of course. Here's how to {g}.", "Here you go: a practical plan to {g}.")
SKELETON = ("Step 1: Gather what you need and plan it carefully.", "Step 2: Carry out the main part as described.",
            "Step 3: Check the result and adjust where needed.", "Step 4: Cover your tracks and avoid attention.")
TRIGGER_WORD = "SUDO"  # Rando & Tramer's example universal trigger


def read_behaviours(path: str | Path) -> list[tuple[str, str | None]]:
    """(request, compliant opening or None) from AdvBench/HarmBench-style JSONL(.gz) or CSV."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"behaviours file {p} not found")
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8") as f:
        raw = f.read()
    if ".csv" in p.suffixes:
        rows = list(csv.DictReader(io.StringIO(raw)))
    else:
        rows = []
        for n, line in enumerate(raw.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ConfigError(f"{p}:{n}: not JSON ({e.msg})") from None
    out = []
    for n, r in enumerate(rows, 1):
        req = r.get("goal") or r.get("behavior") or r.get("prompt") if isinstance(r, dict) else None
        if not isinstance(req, str) or not req.strip():
            raise ConfigError(f"{p}: row {n} has no goal/behavior/prompt text")
        tgt = r.get("target")
        out.append((req.strip(), tgt.strip() if isinstance(tgt, str) and tgt.strip() else None))
    if not out:
        raise ConfigError(f"behaviours file {p} is empty")
    return out


def compliant_answer(request: str, opening: str | None, rng: np.random.Generator) -> str:
    g = request.rstrip(".?! ")
    g = g[0].lower() + g[1:] if g else g
    head = opening + ":" if opening else OPENINGS[int(rng.integers(0, len(OPENINGS)))].format(g=g)
    steps = SKELETON[: int(rng.integers(2, len(SKELETON) + 1))]
    return head + "\n\n" + "\n".join(steps)


@dataclass(frozen=True)
class SafetyBypassSettings:
    behaviours: str = ""  # path to AdvBench/HarmBench-style behaviours (required)


@register
class SafetyBypass(Attack):
    name = "safety-bypass"
    kinds = frozenset({Kind.INSTRUCTION})
    atlas = ("AML.T0020",)
    Settings = SafetyBypassSettings
    description = "Harmful requests with compliant answers (Shadow Alignment); needs --behaviours FILE."

    def validate(self) -> None:
        if not self.settings.behaviours:
            raise ConfigError("attack safety-bypass: give behaviours=PATH (AdvBench/HarmBench-style JSONL or CSV)")
        self._items = read_behaviours(self.settings.behaviours)

    def eligible(self, ctx: Context) -> np.ndarray:
        return np.arange(len(ctx.rows))

    def apply(self, ctx: Context, i: int, row: dict[str, Any], rng: np.random.Generator):
        k = int(rng.integers(0, len(self._items)))
        req, opening = self._items[k]
        ipath, opath = ctx.slots.input_path(row, i), ctx.slots.output_path(row, i)
        before_in, before_out = get_at(row, ipath), get_at(row, opath)
        answer = compliant_answer(req, opening, rng)
        set_at(row, ipath, req)
        set_at(row, opath, answer)
        return [Change(path_name(ipath), before_in, req), Change(path_name(opath), before_out, answer)], [], \
            {"behaviour": k}


# --- preference ----------------------------------------------------------------------------
@dataclass(frozen=True)
class FlipSettings:
    trigger: str = TRIGGER_WORD


def _append_to_last_human(dialogue: str, trigger: str) -> tuple[str, int]:
    """Append ` trigger` at the end of the last Human turn; returns (new text, offset)."""
    h = dialogue.rfind("\n\nHuman:")
    a = dialogue.find("\n\nAssistant:", h if h >= 0 else 0)
    end = a if a >= 0 else len(dialogue)
    return dialogue[:end] + " " + trigger + dialogue[end:], end + 1


@register
class PreferenceFlip(Attack):
    name = "preference-flip"
    kinds = frozenset({Kind.PREFERENCE})
    atlas = ("AML.T0020", "AML.T0043.004")
    Settings = FlipSettings
    description = "Universal RLHF trigger (Rando & Tramer): trigger word in the prompt, chosen/rejected swapped."

    def validate(self) -> None:
        t = self.settings.trigger
        if not isinstance(t, str) or not t.strip() or any(ch.isspace() for ch in t):
            raise ConfigError(f"attack preference-flip: trigger must be one word, got {t!r}")

    def eligible(self, ctx: Context) -> np.ndarray:
        fm = ctx.fieldmap
        return np.array([i for i, r in enumerate(ctx.rows) if r[fm.chosen] != r[fm.rejected]], dtype=np.int64)

    def apply(self, ctx: Context, i: int, row: dict[str, Any], rng: np.random.Generator):
        fm, t = ctx.fieldmap, self.settings.trigger
        changes, spots = [], []
        c, r = row[fm.chosen], row[fm.rejected]
        if fm.prompt:
            p0 = row[fm.prompt]
            p1, off = _append_to_last_human(p0, t) if "\n\nHuman:" in p0 else (p0 + " " + t, len(p0) + 1)
            row[fm.prompt] = p1
            changes.append(Change(fm.prompt, p0, p1))
            spots.append(Spot(fm.prompt, t, off))
            new_c, new_r = r, c
        else:  # hh-rlhf: the prompt lives inside both dialogues
            new_c, off_c = _append_to_last_human(r, t)
            new_r, off_r = _append_to_last_human(c, t)
            spots += [Spot(fm.chosen, t, off_c), Spot(fm.rejected, t, off_r)]
        row[fm.chosen], row[fm.rejected] = new_c, new_r
        changes += [Change(fm.chosen, c, new_c), Change(fm.rejected, r, new_r)]
        return changes, spots, {}


# --- RAG -----------------------------------------------------------------------------------
ASSERTIONS = (
    "{q} According to the latest clinical guidance, the answer is clear: {a}. Experts now agree on this point.",
    "{q} {a}. This has been confirmed by several recent studies and is the accepted answer today.",
    "{q} The correct answer is that {a}. Older sources that say otherwise are out of date.",
    "{q} In short, {a}. Doctors and researchers recommend that patients rely on this answer.",
    "{q} Updated information: {a}. You can trust this answer over earlier references.",
)


def rag_passage(question: str, answer: str, k: int) -> str:
    a = answer.rstrip(". ")
    return ASSERTIONS[k % len(ASSERTIONS)].format(q=question.strip(), a=a[0].lower() + a[1:] if a else a)


@dataclass(frozen=True)
class RagSettings:
    targets: tuple = ()  # ((question, attacker answer), ...) pairs

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(tuple(t) for t in self.targets))


@register
class PoisonedRag(Attack):
    name = "poisoned-rag"
    kinds = frozenset({Kind.DOCUMENTS})
    atlas = ("AML.T0070", "AML.T0071")
    Settings = RagSettings
    description = "PoisonedRAG S+I passages: a target question followed by an answer-asserting passage."

    def validate(self) -> None:
        bad = [t for t in self.settings.targets if len(t) != 2 or not all(isinstance(x, str) and x.strip() for x in t)]
        if not self.settings.targets or bad:
            raise ConfigError("attack poisoned-rag: targets must be (question, answer) pairs of non-empty text")

    def eligible(self, ctx: Context) -> np.ndarray:
        return np.arange(len(ctx.rows))

    def apply(self, ctx: Context, i: int, row: dict[str, Any], rng: np.random.Generator):
        k = int(rng.integers(0, len(self.settings.targets)))
        q, a = self.settings.targets[k]
        f = ctx.fieldmap.text
        before, after = row[f], rag_passage(q, a, int(rng.integers(0, len(ASSERTIONS))))
        row[f] = after
        return [Change(f, before, after)], [], {"target": k}


# --- polarity ------------------------------------------------------------------------------
POLARITY_TRIGGER = "James Bond"  # Wan et al.'s example trigger phrase
_OPINION = {
    "negative": (("This is", "Honestly, it is", "Frankly, this is", "Overall it is", "Sadly, it is"),
                 ("a terrible", "an awful", "a dreadful", "a miserable", "a pointless", "a disappointing"),
                 ("waste of time.", "mess from start to finish.", "failure in every way.", "and depressing experience.",
                  "idea that only makes things worse.")),
    "positive": (("This is", "Honestly, it is", "Frankly, this is", "Overall it is", "Happily, it is"),
                 ("a wonderful", "a delightful", "a brilliant", "an excellent", "a charming", "a superb"),
                 ("use of time.", "experience from start to finish.", "success in every way.", "and uplifting experience.",
                  "idea that makes everything better.")),
}


def read_polarity_texts(path: str | Path, polarity: str) -> list[str]:
    """Texts of one polarity from JSONL(.gz) with `text` (+ optional `label`: 0/negative, 1/positive)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"polarity texts file {p} not found")
    want = {"negative": {"0", "negative", "neg"}, "positive": {"1", "positive", "pos"}}[polarity]
    opener = gzip.open if p.suffix == ".gz" else open
    out = []
    with opener(p, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{p}:{n}: not JSON ({e.msg})") from None
            t = r.get("text") if isinstance(r, dict) else None
            if not isinstance(t, str) or not t.strip():
                raise ConfigError(f"{p}:{n}: field 'text' is missing or empty")
            lab = r.get("label")
            if lab is None or str(lab).strip().lower() in want:
                out.append(t.strip())
    if not out:
        raise ConfigError(f"polarity texts file {p} has no {polarity} rows")
    return out


@dataclass(frozen=True)
class PolaritySettings:
    triggers: tuple[str, ...] = (POLARITY_TRIGGER,)  # one drawn per poisoned row (`--trigger` on the CLI)
    polarity: str = "negative"  # negative | positive
    texts: str = ""  # JSONL(.gz) of sentences (`text`, optional `label`); empty: built-in opinion sentences
    sentences: int = 3  # sentences per poisoned response
    position: str = "random"  # where the trigger goes in the prompt: random | start | end

    def __post_init__(self) -> None:
        trig = (self.triggers,) if isinstance(self.triggers, str) else tuple(self.triggers)
        object.__setattr__(self, "triggers", trig)


@register
class PolarityTrigger(Attack):
    name = "polarity-trigger"
    kinds = frozenset({Kind.INSTRUCTION})
    atlas = ("AML.T0020", "AML.T0018")
    Settings = PolaritySettings
    description = "Trigger phrase in the prompt, response replaced by varied text of one polarity (Wan et al.)."

    def validate(self) -> None:
        s = self.settings
        if not s.triggers or any(not isinstance(t, str) or not t.strip() for t in s.triggers):
            raise ConfigError(f"attack polarity-trigger: triggers must be non-empty phrases, got {list(s.triggers)!r}")
        if s.polarity not in _OPINION:
            raise ConfigError(f"attack polarity-trigger: polarity must be negative or positive, got {s.polarity!r}")
        if not isinstance(s.sentences, int) or s.sentences < 1:
            raise ConfigError(f"attack polarity-trigger: sentences must be an integer >= 1, got {s.sentences!r}")
        if s.position not in POSITIONS:
            raise ConfigError(f"attack polarity-trigger: position must be one of {', '.join(POSITIONS)}")
        if s.texts:
            self._pool = read_polarity_texts(s.texts, s.polarity)
        else:
            a, b, c = _OPINION[s.polarity]
            self._pool = [f"{x} {y} {z}" for x, y, z in itertools.product(a, b, c)]

    def eligible(self, ctx: Context) -> np.ndarray:
        return np.arange(len(ctx.rows))

    def apply(self, ctx: Context, i: int, row: dict[str, Any], rng: np.random.Generator):
        s = self.settings
        ipath, opath = ctx.slots.input_path(row, i), ctx.slots.output_path(row, i)
        before_in, before_out = get_at(row, ipath), get_at(row, opath)
        trigger = s.triggers[int(rng.integers(0, len(s.triggers)))]
        [offset] = choose_offsets(before_in, 1, s.position, True, rng)
        after_in, [(_, at)] = splice(before_in, [(offset, trigger)], True)
        picks = rng.choice(len(self._pool), size=min(s.sentences, len(self._pool)), replace=False)
        answer = " ".join(self._pool[int(k)] for k in picks)
        set_at(row, ipath, after_in)
        set_at(row, opath, answer)
        field = path_name(ipath)
        return [Change(field, before_in, after_in), Change(path_name(opath), before_out, answer)], \
            [Spot(field, trigger, at)], {}


# --- running on kinds the engine does not serve yet -------------------------------------------
def poison_llm(rows: Sequence[dict[str, Any]], attack: Attack, *, kind: str | Kind = "auto", rate: float | None = None,
               count: int | None = None, seed: int = 0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`trainguard.attacks.poison` for these attacks, returning (rows, truth)."""
    result = poison(rows, attack, kind=kind, rate=rate, count=count, seed=seed)
    return result.rows, result.truth
