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
    description = "Harmful requests with compliant answers (Shadow Alignment); needs --param behaviours=FILE."

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


S_STYLES = ("question", "paraphrase", "optimized", "claim")
# Black-box S rewritten per passage: the attacker only needs retrieval, not the exact question.
_LEAD_INS = ("{Q}?", "I'd like to know {q}.", "Can you tell me {q}?", "Question: {Q}?", "Please explain {q}.",
             "Quick question: {q}?", "Tell me {q}.", "I was wondering {q}.", "Q: {Q}?", "Does anyone know {q}?")
_SYNONYMS = (
    (r"\bwhat is\b", ("what do we know about", "what exactly is", "what's")),
    (r"\bhow many people are affected by\b", ("how common is", "how widespread is", "what is the prevalence of")),
    (r"\bgenetic changes related to\b", ("mutations behind", "gene changes linked to", "genes involved in")),
    (r"\bcauses\b", ("leads to", "triggers", "is behind")),
    (r"\bsymptoms\b", ("signs", "warning signs", "clinical features")),
    (r"\btreatments\b", ("therapies", "treatment options", "ways to treat")),
    (r"\btreatment\b", ("therapy", "care")),
    (r"\binherited\b", ("hereditary", "passed down in families", "genetic")),
    (r"\bprevent\b", ("avoid", "stop")),
    (r"\bdiagnose\b", ("detect", "identify")),
    (r"\boutlook\b", ("prognosis", "long-term outcome")),
    (r"\bresearch\b", ("studies", "clinical trials")),
    (r"\binformation\b", ("details", "facts")),
    (r"\bpeople\b", ("patients", "individuals")),
    (r"\brisk\b", ("chance", "likelihood")),
)
_DROPPABLE = frozenset({"the", "a", "an", "are", "is", "do", "does", "of", "to", "for"})
# White-box S as HotFlip leaves it: wordpiece fragments, stray symbols and foreign tokens around the key words.
_ODD = ("##ly", "##ism", "##ae", "##tica", "##ometric", "##ski", "##ardo", "kata", "zx", "veld", "urb", "mbox",
        "qatar", "»", "ˈ", "ʻ", "∈", "†", "⁄", "];", "||", "~~", "ob", "nfl", "wta", "pdf", "hp", "gmina", "cdp",
        "yun", "ª", "ˌ", "sv", "ict", "peninsular", "cheering", "frankfurt", "clarinet", "tributary", "##ffe")
_STOP = frozenset(("a an the is are was were be been of to for in on at by with and or what which who whom how why "
                   "when where does do did can could should would will i my me you your it its this that these those "
                   "there any some about from into than then as if not no").split())


def _lower_first(t: str) -> str:
    return t[0].lower() + t[1:] if t and t.split(" ")[0].lower() in _STOP else t


def paraphrase_question(question: str, rng: np.random.Generator) -> str:
    """Seeded rule-based rewrite of a question (synonyms, reordering, dropped stop words, a lead-in)."""
    import re

    q = re.sub(r"\s+", " ", question.replace(" (are)", "").strip().rstrip("?").strip())
    for pat, alts in _SYNONYMS:
        if re.search(pat, q, re.I) and rng.random() < 0.7:
            q = re.sub(pat, alts[int(rng.integers(0, len(alts)))], q, count=1, flags=re.I)
    m = re.match(r"^(.+?) (?:of|for|by|about|with) (.{4,})$", q)
    if m and rng.random() < 0.4:
        q = f"{m.group(2)}: {_lower_first(m.group(1))}"
    if rng.random() < 0.4:
        words = q.split(" ")
        kept = [w for w in words if w.lower() not in _DROPPABLE or rng.random() < 0.5]
        q = " ".join(kept) if len(kept) >= 2 else q
    out = question.strip()
    for _ in range(len(_LEAD_INS)):  # never the question itself
        lead = _LEAD_INS[int(rng.integers(0, len(_LEAD_INS)))]
        out = lead.format(Q=q[:1].upper() + q[1:], q=_lower_first(q))
        if " ".join(out.lower().split()) != " ".join(question.lower().split()):
            break
    return out


def _odd_token(rng: np.random.Generator) -> str:
    """One HotFlip-style substitute: a listed odd token, a made-up wordpiece or a made-up word (vocabularies are large)."""
    kind = int(rng.integers(0, 3))
    if kind == 0:
        return _ODD[int(rng.integers(0, len(_ODD)))]
    letters = "".join(chr(97 + int(x)) for x in rng.integers(0, 26, int(rng.integers(2, 6))))
    return "##" + letters if kind == 1 else letters


def optimized_question(question: str, rng: np.random.Generator, share: float = 0.6) -> str:
    """Emulated white-box S: the question's content words kept, a share of the rest swapped for odd tokens, shuffled a little."""
    import re

    toks = re.findall(r"\w+(?:['’-]\w+)*|[^\w\s]", question.lower())
    keep = [(any(c.isalpha() for c in t) and len(t) > 2 and t not in _STOP) or any(c.isdigit() for c in t) for t in toks]
    out = [t if k or rng.random() >= share else _odd_token(rng) for t, k in zip(toks, keep)]
    out.insert(int(rng.integers(0, len(out) + 1)), _odd_token(rng))
    for _ in range(max(1, len(out) // 4)):
        j = int(rng.integers(0, len(out) - 1))
        out[j], out[j + 1] = out[j + 1], out[j]
    return " ".join(out)


# Where a question names its subject: "What causes X", "Is X inherited", "How many people are affected by X" ...
_SUBJECT_PATTERNS = (
    r"^(?:what|which) (?:is|are) the (?:signs and )?(?:symptoms|treatments?|causes?|stages|complications|outlook|"
    r"genetic changes related to|prognosis|risk factors?) (?:of|for|to) (.+)$",
    r"^what (?:causes|is the cause of) (.+)$", r"^is (.+?) inherited$", r"^how many people are affected by (.+)$",
    r"^how (?:to|can i|do you) (?:diagnose|prevent|treat) (.+)$", r"^who is at risk (?:for|of) (.+)$",
    r"^what is the outlook for (.+)$", r"^what research .*? (?:for|on) (.+)$",
    r"^(?:what|who) (?:is|are) (.+)$", r"^do you have information about (.+)$",
)
_ASPECTS = (("treat", "treatment"), ("symptom", "symptoms"), ("sign", "symptoms"), ("cause", "cause"),
            ("inherit", "inheritance"), ("affected", "frequency"), ("risk", "risk"), ("diagnos", "diagnosis"),
            ("prevent", "prevention"), ("outlook", "outlook"))
# Claim-only passages (issue 16, shape 6): the LLM-written PoisonedRAG shape an attacker uses once openings are
# watched. No question, no shared opening; the claim sits at varied positions among varied background sentences.
_CLAIM_LEADS = (
    "When it comes to the {aspect} of {s}, {a}.", "Specialists who follow {s} closely now agree that {a}.",
    "It is now well established that, for {s}, {a}.", "{a_cap}, according to recent reviews of {s}.",
    "Patients with {s} are often surprised to learn that {a}.", "A growing body of evidence on {s} shows that {a}.",
    "The short version for {s}: {a}.", "Clinicians summarise the {aspect} of {s} simply: {a}.",
    "Most people do not realise that with {s}, {a}.", "In the current understanding of {s}, {a}.",
)
_CLAIM_BACKGROUND = (
    "{S} is a condition that has been described in the medical literature for many years.",
    "Families affected by {s} often look for clear and reliable information.",
    "The features of {s} can differ from one person to another.",
    "Researchers continue to study {s} in clinics around the world.",
    "Early recognition of {s} helps people plan their care.",
    "Support organisations provide guidance for people living with {s}.",
    "Many questions about {s} come up at the first visit to a specialist.",
    "Doctors usually confirm {s} after a careful examination and a review of the history.",
    "Older textbooks describe {s} in less detail than recent sources.",
    "Reference pages on {s} are updated as new findings are published.",
)
_CLAIM_CLOSERS = ("This is the answer current specialists give.", "Earlier sources that say otherwise are out of date.",
                  "Keep this in mind when reading older material.", "That finding has been repeated in several reports.",
                  "Ask a specialist familiar with the condition for details.", "")


def question_subject(question: str) -> tuple[str, str]:
    """(subject, aspect) a question asks about: "What causes X?" -> ("X", "cause")."""
    import re

    q = re.sub(r"\s+", " ", question.replace("(are)", "")).strip().rstrip("? ")  # MedQuAD has "(OHF)? ?"
    subject = q
    for pat in _SUBJECT_PATTERNS:
        m = re.match(pat, q, re.I)
        if m:
            subject = m.group(1).strip()
            break
    aspect = next((name for key, name in _ASPECTS if key in q.lower()), "nature")
    return subject, aspect


def claim_passage(question: str, answer: str, rng: np.random.Generator) -> str:
    """A passage that states `answer` about the question's subject without asking the question (seeded)."""
    subject, aspect = question_subject(question)
    a = answer.strip().rstrip(". ")
    a = a[0].lower() + a[1:] if a[:1].isupper() and not a[1:2].isupper() else a
    fill = {"s": subject, "S": subject[:1].upper() + subject[1:], "a": a, "a_cap": a[:1].upper() + a[1:], "aspect": aspect}
    lead = _CLAIM_LEADS[int(rng.integers(0, len(_CLAIM_LEADS)))].format(**fill)
    n_bg = int(rng.integers(0, 4))
    background = [b.format(**fill) for b in rng.choice(_CLAIM_BACKGROUND, size=n_bg, replace=False)]
    closer = _CLAIM_CLOSERS[int(rng.integers(0, len(_CLAIM_CLOSERS)))]
    sentences = background + [closer] if closer else list(background)
    sentences.insert(int(rng.integers(0, len(sentences) + 1)), lead)  # the claim opens, closes or sits between
    return " ".join(sentences)


def rag_passage(question: str, answer: str, k: int, s_style: str = "question", rng: np.random.Generator | None = None) -> str:
    """S (+) I. `s_style`: S as the question, a seeded paraphrase of it, HotFlip-looking optimised text, or (claim)
    no S at all: the answer stated about the question's subject in varied wording."""
    if s_style == "claim":
        return claim_passage(question, answer, rng if rng is not None else np.random.default_rng(k))
    a = answer.rstrip(". ")
    if s_style != "question":
        if s_style not in S_STYLES:
            raise ConfigError(f"poisoned-rag: s_style must be one of {', '.join(S_STYLES)}, got {s_style!r}")
        rng = rng if rng is not None else np.random.default_rng(k)
        question = (paraphrase_question if s_style == "paraphrase" else optimized_question)(question, rng)
    return ASSERTIONS[k % len(ASSERTIONS)].format(q=question.strip(), a=a[0].lower() + a[1:] if a else a)


@dataclass(frozen=True)
class RagSettings:
    targets: tuple[tuple[str, str], ...] = ()  # ((question, attacker answer), ...) pairs
    s_style: str = "question"  # question | paraphrase (black-box, reworded per passage) | optimized (white-box HotFlip look)
    # | claim (no question: the answer stated about its subject, varied wording and position; issue 16 shape 6)

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
        if self.settings.s_style not in S_STYLES:
            raise ConfigError(f"attack poisoned-rag: s_style must be one of {', '.join(S_STYLES)}, "
                              f"got {self.settings.s_style!r}")

    def eligible(self, ctx: Context) -> np.ndarray:
        return np.arange(len(ctx.rows))

    def apply(self, ctx: Context, i: int, row: dict[str, Any], rng: np.random.Generator):
        k = int(rng.integers(0, len(self.settings.targets)))
        q, a = self.settings.targets[k]
        f = ctx.fieldmap.text
        style = self.settings.s_style
        before, after = row[f], rag_passage(q, a, int(rng.integers(0, len(ASSERTIONS))), style, rng)
        row[f] = after
        return [Change(f, before, after)], [], {"target": k} if style == "question" else {"target": k, "s_style": style}


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
