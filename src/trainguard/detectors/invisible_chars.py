"""Invisible and confusable characters: triggers a reviewer cannot see.

Zero-width characters, bidi controls, Unicode tag characters and mixed-script
homoglyph words render as nothing (or as something else) yet are distinct
tokens to a model, which makes them ideal backdoor triggers. Legitimate uses
are common (ZWJ in emoji sequences, ZWNJ in Persian and Indic scripts, tag
sequences in subdivision flags, a leading BOM), so those contexts are
recognised and not reported. Severity rises when rows sharing a character
signature also share one output, the mark of a planted trigger.
"""

from __future__ import annotations

import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
import regex

from trainguard.detectors.base import ShardedDetector, register
from trainguard.findings import (
    ATLAS_BACKDOOR_TRIGGER,
    ATLAS_POISON_TRAINING_DATA,
    Alert,
    Confidence,
    DetectorResult,
    Severity,
)
from trainguard.io.dataset import Dataset
from trainguard.records import Kind
from trainguard.text import BIDI, SUSPICIOUS, ZERO_WIDTH, output_key

_HIDDEN = SUSPICIOUS
_MIXED_WORD = regex.compile(
    r"\b(?=\w*\p{Latin})(?=\w*[\p{Cyrillic}\p{Greek}\p{Armenian}\p{Cherokee}])[\w]+\b", regex.V1
)
_EMOJI_NEIGHBOUR = regex.compile(r"[\p{Extended_Pictographic}\p{Emoji_Modifier}\uFE0F]", regex.V1)
_JOINING_SCRIPT = regex.compile(
    r"[\p{Arabic}\p{Devanagari}\p{Bengali}\p{Gurmukhi}\p{Gujarati}\p{Oriya}\p{Tamil}\p{Telugu}"
    r"\p{Kannada}\p{Malayalam}\p{Sinhala}\p{Syriac}\p{Mongolian}\p{Hebrew}\p{Thaana}\p{Myanmar}\p{Khmer}]",
    regex.V1,
)
_RTL = regex.compile(r"[\p{Arabic}\p{Hebrew}\p{Syriac}\p{Thaana}]", regex.V1)


def category(ch: str) -> str:
    cp = ord(ch)
    if ch in ZERO_WIDTH:
        return "zero-width"
    if ch in BIDI:
        return "bidi-control"
    if 0xE0000 <= cp <= 0xE007F:
        return "tag"
    if 0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF:
        return "variation-selector"
    if 0xE000 <= cp <= 0xF8FF:
        return "private-use"
    if ch == "\u00ad":
        return "soft-hyphen"
    return "control"


def _benign(text: str, i: int, ch: str) -> bool:
    """Contexts where the character is ordinary typography, not a hidden token."""
    prev = text[i - 1] if i > 0 else ""
    nxt = text[i + 1] if i + 1 < len(text) else ""
    if ch == "\ufeff" and i == 0:
        return True
    if ch in "\u200d\ufe0f" and (_EMOJI_NEIGHBOUR.match(prev or " ") or _EMOJI_NEIGHBOUR.match(nxt or " ")):
        return True
    if ch in "\u200c\u200d" and (_JOINING_SCRIPT.match(prev or " ") or _JOINING_SCRIPT.match(nxt or " ")):
        return True
    if ch in "\u200e\u200f\u061c" and _RTL.search(text):
        return True
    if 0xE0020 <= ord(ch) <= 0xE007F:  # subdivision flags: U+1F3F4 followed by tag letters
        j = i
        while j > 0 and 0xE0020 <= ord(text[j - 1]) <= 0xE007F:
            j -= 1
        return j > 0 and text[j - 1] == "\U0001f3f4"
    if 0xFE00 <= ord(ch) <= 0xFE0F and prev and not prev.isascii():
        return True
    return False


def scan_text(text: str) -> tuple[list[tuple[int, str]], list[str]]:
    """(suspicious hidden characters with offsets, mixed-script words) in one string."""
    if text.isascii():
        ctrl = [(m.start(), m.group()) for m in _HIDDEN.finditer(text)]
        return [(i, c) for i, c in ctrl if c not in "\t\n\r"], []
    hidden = [(m.start(), m.group()) for m in _HIDDEN.finditer(text) if not _benign(text, m.start(), m.group())]
    mixed = [m.group() for m in _MIXED_WORD.finditer(text)]
    compat = [w for w in regex.findall(r"\w+", text) if _compat_lookalike(w)]
    return hidden, mixed + compat


def _compat_lookalike(word: str) -> bool:
    """Fullwidth or mathematical letters that normalise to plain ASCII letters."""
    if word.isascii():
        return False
    norm = unicodedata.normalize("NFKC", word)
    return norm != word and norm.isascii() and norm.isalnum()


@dataclass(frozen=True)
class Settings:
    min_rows_associated: int = 3  # rows sharing a signature before output association counts
    association_purity: float = 0.9
    max_examples: int = 5


@dataclass
class InvisibleSummary:
    """Per-shard hits: only rows carrying a hidden character or a lookalike word are kept."""

    n: int = 0
    by_sig: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(list))
    outputs: dict[int, str | None] = field(default_factory=dict)  # position -> output of a row with a hit
    detail: dict[int, dict] = field(default_factory=dict)

    def merge(self, other: "InvisibleSummary") -> "InvisibleSummary":
        out = InvisibleSummary(self.n + other.n, defaultdict(list, {k: list(v) for k, v in self.by_sig.items()}),
                               dict(self.outputs), dict(self.detail))
        for sig, positions in other.by_sig.items():
            out.by_sig[sig].extend(p + self.n for p in positions)
        out.outputs.update({p + self.n: v for p, v in other.outputs.items()})
        out.detail.update({p + self.n: v for p, v in other.detail.items()})
        return out


@register
class InvisibleCharacters(ShardedDetector):
    name = "invisible-characters"
    version = "1"
    kinds = frozenset(Kind)
    atlas = (ATLAS_BACKDOOR_TRIGGER, ATLAS_POISON_TRAINING_DATA)
    Settings = Settings
    description = "zero-width, bidi, tag and control characters, and mixed-script homoglyph words"

    def summarize(self, shard: Dataset) -> InvisibleSummary:
        out = InvisibleSummary(len(shard))
        with_outputs = shard.kind in (Kind.CLASSIFICATION, Kind.INSTRUCTION)
        for pos, r in enumerate(shard):
            for field_name, text in _fields(r):
                hidden, words = scan_text(text)
                if hidden:
                    cps = sorted({c for _, c in hidden})
                    cats = sorted({category(c) for c in cps})
                    sig = ("+".join(cats), " ".join(f"U+{ord(c):04X}" for c in cps))
                    out.by_sig[sig].append(pos)
                    out.detail.setdefault(pos, {})[field_name] = {"offsets": [i for i, _ in hidden][:10],
                                                                  "code_points": sig[1]}
                if words:
                    sig = ("mixed-script", ", ".join(sorted({_script_mix(w) for w in words})))
                    out.by_sig[sig].append(pos)
                    out.detail.setdefault(pos, {})[field_name + ":words"] = sorted(set(words))[:10]
                if pos in out.detail and pos not in out.outputs:
                    out.outputs[pos] = output_key(r) if with_outputs else None
        return out

    def finalize(self, summary: InvisibleSummary, kind: Kind) -> DetectorResult:
        s = self.settings
        with_outputs = kind in (Kind.CLASSIFICATION, Kind.INSTRUCTION)
        row_scores = np.zeros(summary.n)
        findings = []
        for (cat, cps), positions in sorted(summary.by_sig.items(), key=lambda kv: -len(kv[1])):
            positions = sorted(set(positions))
            assoc = None
            if with_outputs and len(positions) >= s.min_rows_associated:
                top, n_top = Counter(summary.outputs[p] for p in positions).most_common(1)[0]
                if n_top / len(positions) >= s.association_purity and top is not None:
                    assoc = (top, n_top)
            risky = any(c in cat for c in ("tag", "bidi-control")) or assoc is not None
            severity = Severity.HIGH if risky else Severity.MEDIUM if cat != "control" else Severity.LOW
            if cat == "mixed-script" and assoc is None:
                severity = Severity.MEDIUM
            score = {Severity.HIGH: 0.95, Severity.MEDIUM: 0.6, Severity.LOW: 0.3}[severity]
            row_scores[positions] = np.maximum(row_scores[positions], score)
            evidence = {
                "category": cat,
                "code_points": cps if cat != "mixed-script" else None,
                "names": _names(cps) if cat != "mixed-script" else None,
                "scripts": cps if cat == "mixed-script" else None,
                "examples": [{"positions": [p], **summary.detail[p]} for p in positions[: s.max_examples]],
            }
            if assoc:
                evidence["associated_output"] = str(assoc[0])[:80]
                evidence["output_share"] = round(assoc[1] / len(positions), 4)
            evidence = {k: v for k, v in evidence.items() if v is not None}
            what = f"{cat} characters {cps}" if cat != "mixed-script" else f"mixed-script words ({cps})"
            tail = f", {assoc[1]} of them with output {str(assoc[0])[:40]!r}" if assoc else ""
            findings.append(Alert(
                rule=cat, title=f"{what} in {len(positions)} rows{tail}", positions=tuple(positions),
                score=score, severity=severity,
                confidence=Confidence.HIGH if cat != "mixed-script" else Confidence.MEDIUM, evidence=evidence,
            ))
        return DetectorResult(tuple(findings), row_scores, {"signatures": len(summary.by_sig)})


def _fields(r):
    yield "text", r.text
    for name in ("response", "chosen", "rejected"):
        value = getattr(r, name)
        if value:
            yield name, value


def _names(cps: str) -> list[str]:
    out = []
    for token in cps.split():
        ch = chr(int(token[2:], 16))
        out.append(f"{token} {unicodedata.name(ch, 'UNNAMED')}")
    return out


def _script_mix(word: str) -> str:
    scripts = set()
    for ch in word:
        for script in ("Latin", "Cyrillic", "Greek", "Armenian", "Cherokee"):
            if regex.match(rf"\p{{{script}}}", ch):
                scripts.add(script)
    if not scripts:
        return "compatibility-lookalike"
    return "+".join(sorted(scripts)) if len(scripts) > 1 else "compatibility-lookalike"
