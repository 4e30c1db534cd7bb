"""Where candidate triggers come from, and how one is put into a clean input.

Sources: the packaged trigger library (triggers.tsv: BadNets tokens, phrases,
invisible characters, homoglyphs, misspellings), a user's trigger file, the
findings of a `trainguard scan --format json` report, and the clean data's own
rare tokens, plus format candidates (punctuation and whitespace runs).
Triggers are inserted between words (start, middle, end) so the same
candidate reaches any model, white-box or an endpoint.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

from trainguard.errors import DataError
from trainguard.text import tokens

POSITIONS = ("start", "middle", "end")
_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})")
_VISIBLE = re.compile(r"<U\+([0-9A-Fa-f]{4,6})>")
_CODEPOINT = re.compile(r"U\+([0-9A-Fa-f]{4,6})")


@dataclass(frozen=True, slots=True)
class Candidate:
    text: str
    source: str  # library:<category>, file, report:<detector>, rare-token, format:<kind>, inversion, null

    def __str__(self) -> str:
        return self.text

    @property
    def length(self) -> int:
        """Its shape for the null: tokens inserted (words and each punctuation mark; a whitespace run
        counts as one). Counting every mark errs towards a longer, stronger null."""
        if self.source == "format:whitespace":
            return 1
        return max(1, len(tokens(self.text)))


def format_candidates() -> list[Candidate]:
    """Punctuation and whitespace runs (format triggers).

    Whole-input changes (upper-casing every word) are not candidates: no
    random insertion has their shape, so there is no matched null for them.
    """
    out = [Candidate(ch * n, "format:punctuation") for ch in "!?.*~#@$%^&+=|/-_:;," for n in (2, 3, 5)]
    out += [Candidate(t, "format:punctuation") for t in ("?!", "!?", "?!?!", "...!", "!.!.", "-_-")]
    out += [Candidate(t, "format:whitespace") for t in ("\t", "\t\t", "   ", "\n", "\u00a0\u00a0")]
    return out


def insert(text: str, trigger: str, position: str) -> str:
    """Put `trigger` before the first word, after the middle word, or after the last."""
    words = text.split()
    if position == "start":
        at = 0
    elif position == "middle":
        at = len(words) // 2
    elif position == "end":
        at = len(words)
    else:
        raise ValueError(f"unknown position {position!r}; expected one of {POSITIONS}")
    return " ".join(words[:at] + [trigger] + words[at:])


def _unescape(s: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1) or m.group(2), 16)), s)


def parse_trigger_lines(lines: Iterable[str], path: str, default_source: str) -> list[Candidate]:
    """`TRIGGER` or `CATEGORY<TAB>TRIGGER` per line; blank and '#' lines ignored."""
    out: list[Candidate] = []
    for lineno, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        category, tab, trig = line.partition("\t")
        source = f"{default_source}:{category.strip()}" if tab else default_source
        trig = _unescape(trig if tab else category)
        if not trig.strip() and not any(ord(c) > 127 for c in trig):
            raise DataError(path, "empty trigger", line=lineno, field="trigger")
        out.append(Candidate(trig.strip(" "), source))
    return out


def library() -> list[Candidate]:
    """The packaged trigger library."""
    text = (resources.files("trainguard.probe") / "triggers.tsv").read_text(encoding="utf-8")
    return parse_trigger_lines(text.splitlines(), "triggers.tsv", "library")


def from_file(path: str | Path) -> list[Candidate]:
    """A user's trigger list (same format as the library)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(str(path), "trigger file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(str(path), f"not UTF-8 text (byte {e.start})") from None
    found = parse_trigger_lines(text.splitlines(), str(path), "file")
    if not found:
        raise DataError(str(path), "trigger file lists no triggers")
    return found


def from_report(path: str | Path) -> list[Candidate]:
    """Triggers named by a scan report's findings (trigger-association, invisible characters, ...)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(str(path), "scan report not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(str(path), f"not a JSON scan report ({e})") from None
    findings = doc.get("findings") if isinstance(doc, dict) else None
    if not isinstance(findings, list):
        raise DataError(str(path), "not a trainguard JSON report (no 'findings' list)", field="findings")
    out: list[Candidate] = []
    for i, f in enumerate(findings):
        ev = f.get("evidence") if isinstance(f, dict) else None
        if not isinstance(ev, dict):
            continue
        source = f"report:{f.get('detector', '?')}"
        for key in ("trigger", "keyword", "feature"):
            if isinstance(ev.get(key), str) and ev[key].strip():
                out.append(Candidate(_VISIBLE.sub(lambda m: chr(int(m.group(1), 16)), ev[key]), source))
                break
        else:
            cps = ev.get("code_points")
            if cps:
                chars = "".join(chr(int(h, 16)) for h in _CODEPOINT.findall(json.dumps(cps)))
                if chars:
                    out.append(Candidate(chars, source))
    return dedupe(out)


def rare_tokens(texts: Sequence[str], limit: int = 50, max_count: int = 2) -> list[Candidate]:
    """Word tokens seen at most `max_count` times in the clean data (a trigger is rare by design)."""
    counts = Counter(t for text in texts for t in set(tokens(text)) if any(ch.isalpha() for ch in t))
    rare = sorted((t for t, c in counts.items() if c <= max_count and len(t) <= 20), key=lambda t: (counts[t], t))
    return [Candidate(t, "rare-token") for t in rare[:limit]]


def ordinary_words(texts: Sequence[str], n: int | None = 200, skip: int = 20, min_count: int = 2) -> list[str]:
    """Words of the clean data seen at least `min_count` times, past the `skip` most frequent, `n` of them
    spread over the frequency ranks (None: all): what the null inserts."""
    counts = Counter(t for text in texts for t in tokens(text) if t.isalpha() and len(t) > 2)
    ranked = [t for t, c in counts.most_common() if c >= min_count][skip:]
    if len(ranked) < 10:  # a tiny clean set: every word it has
        ranked = [t for t, _ in counts.most_common()]
    if n is None:
        return ranked
    step = max(1, len(ranked) // n)
    return ranked[::step][:n]


def phrases(texts: Sequence[str], max_n: int = 4, min_count: int = 3, max_share: float = 0.2) -> list[str]:
    """Word n-grams (whitespace-split, case and punctuation kept) of a fine-tuning file's prompts: the
    search space for a trigger the model learned from that file.

    A trigger must recur to be learned, so n-grams seen in fewer than `min_count`
    prompts are skipped, and so are those in more than `max_share` of them
    (stock question openings). An n-gram seen only inside one longer n-gram
    (same count) is dropped for it: a planted phrase is searched whole, not
    word by word. Most frequent first.
    """
    if not 1 <= max_n <= 5:
        raise ValueError(f"max_n must be 1-5, got {max_n}")
    counts: Counter = Counter()
    for text in texts:
        words = text.split()
        counts.update({" ".join(words[i:i + n]) for n in range(1, max_n + 1) for i in range(len(words) - n + 1)})
    top = max_share * len(texts)
    kept = {g: c for g, c in counts.items() if min_count <= c <= top}
    covered: set[str] = set()
    for g, c in kept.items():
        words = g.split()
        for sub in (" ".join(words[:-1]), " ".join(words[1:])) if len(words) > 1 else ():
            if kept.get(sub) == c:
                covered.add(sub)
    return sorted((g for g in kept if g not in covered), key=lambda g: (-kept[g], g))


def search_words(vocabulary: Sequence[str]) -> list[str]:
    """Vocabulary entries worth inserting: distinct, not blank, not special tokens like <pad>."""
    return [w for w in dict.fromkeys(vocabulary) if w.strip() and not (w.startswith("<") and w.endswith(">"))]


def dedupe(cands: Iterable[Candidate]) -> list[Candidate]:
    seen: set[str] = set()
    out = []
    for c in cands:
        if c.text not in seen:
            seen.add(c.text)
            out.append(c)
    return out
