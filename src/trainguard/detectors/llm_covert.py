"""Covert fine-tuning attacks that pass content moderation (issue 16).

`safety-bypass` reads requests as written; these attacks make the written text
look harmless. Four rules, each naming its shape:

- encoding: spans in base64, hex, ROT-n, leetspeak, Cyrillic/Greek
  transliteration or a letter-substitution cipher are decoded and the decoded
  text is re-scored by the shipped safety models. The cipher is solved once per
  dataset, on the pooled non-English text: first from rows that teach it
  (plain text and its cipher with the same word lengths), else by hill-climbing
  on letter 4-gram scores built from the bundled models' English vocabulary
  (document frequencies recovered from their IDF). No phrase list is involved.
- persona: system prompts and answer openings that establish an assistant which
  obeys unconditionally, scored by co-occurring concepts (an identity shift;
  universal quantifiers next to rules/refusals; obedience) across sentences.
- erosion: answers that affirm compliance about the assistant itself; a
  dataset-level binomial test asks whether the rows carrying them have
  harmful-looking requests far more often than the rest of the data predicts.
- trigger: among harmful-looking requests, a prompt token whose rows comply
  while the rest are refused (one-sided Fisher test, Bonferroni over tokens),
  with the near-identical refused requests as contrasting evidence.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import stats

from trainguard.detectors.base import Detector, register
from trainguard.detectors.llm_models import HARM_MODEL, REFUSAL_MODEL, SENTIMENT_MODEL, bundled, last_user_turn
from trainguard.detectors.llm_safety import safety_scores
from trainguard.findings import (ATLAS_BACKDOOR_TRIGGER, ATLAS_POISON_TRAINING_DATA, Alert, Confidence,
                                 DetectorResult, Severity)
from trainguard.io.dataset import Dataset
from trainguard.records import Kind

ALPHA = "abcdefghijklmnopqrstuvwxyz"
_WORD = re.compile(r"[a-z]+")
_B64 = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{16,}={0,2}(?![A-Za-z0-9+/=])")
_HEX = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}[ :]?){8,}(?![0-9A-Fa-f])")
_SENT = re.compile(r"(?<=[.!?:;])\s+|\n+")
_LEET = {"4": "a", "@": "a", "3": "e", "1": "i", "!": "i", "0": "o", "5": "s", "$": "s", "7": "t", "9": "g", "8": "b"}
_LEET_HINT = re.compile(r"[A-Za-z][0-9@$!]|[0-9@$][A-Za-z]")
_LEET_TOKEN = re.compile(r"\S*[A-Za-z]\S*|(?<!\S)[4@](?!\S)")
# Romanisation of Cyrillic and Greek letters (English written in another script reads back as English).
_ROMAN = dict(zip("абвгдезийклмнопрстуфхцыэъьαβγδεζηικλμνξοπρστςυφχψω",
                  ["a", "b", "v", "g", "d", "e", "z", "i", "y", "k", "l", "m", "n", "o", "p", "r", "s", "t", "u", "f",
                   "h", "c", "y", "e", "", "", "a", "b", "g", "d", "e", "z", "h", "i", "k", "l", "m", "n", "x", "o",
                   "p", "r", "s", "t", "s", "u", "f", "c", "ps", "o"]))
_MORSE_TABLE = dict(zip(".- -... -.-. -.. . ..-. --. .... .. .--- -.- .-.. -- -. --- .--. --.- .-. ... - ..- ...- .-- "
                        "-..- -.-- --.. ----- .---- ..--- ...-- ....- ..... -.... --... ---.. ----.".split(),
                        "abcdefghijklmnopqrstuvwxyz0123456789"))
_MORSE = re.compile(r"(?<![\w.\-])[.\-]{1,6}(?:[ \t]+(?:/[ \t]+)?[.\-]{1,6}){7,}(?![\w.\-])")
_NONLATIN = re.compile(r"[\u0370-\u03ff\u0400-\u04ff]")
_ROMAN.update({"ж": "zh", "ч": "ch", "ш": "sh", "щ": "sch", "ю": "yu", "я": "ya", "ё": "e", "θ": "th"})


# --- an English model from the bundled vocabularies ----------------------------------------------
@lru_cache(maxsize=1)
def lexicon() -> dict[str, float]:
    """word -> relative frequency, recovered from the shipped models' IDF (df/n = e^(1-idf))."""
    freq: dict[str, float] = {}
    for name in (HARM_MODEL, REFUSAL_MODEL, SENTIMENT_MODEL):
        m = bundled(name)
        for w, j in m.vocab.items():
            if w.isascii() and w.isalpha():
                f = math.exp(1.0 - float(m.idf[j]))
                if f > freq.get(w, 0.0):
                    freq[w] = f
    return freq


@lru_cache(maxsize=1)
def quadgrams() -> np.ndarray:
    """log P(4-gram) over 27 symbols (26 letters + word boundary), frequency-weighted words."""
    counts = np.full((27,) * 4, 0.01)
    for w, f in lexicon().items():
        s = [26] + [ord(c) - 97 for c in w] + [26]
        for i in range(len(s) - 3):
            counts[s[i], s[i + 1], s[i + 2], s[i + 3]] += f
    return np.log(counts / counts.sum())


@lru_cache(maxsize=1)
def letter_order() -> np.ndarray:
    """English letters from most to least frequent (weighted by word frequency)."""
    c = np.zeros(26)
    for w, f in lexicon().items():
        for ch in w:
            c[ord(ch) - 97] += f
    return np.argsort(-c, kind="stable")


def english_ratio(text: str, min_len: int = 2) -> tuple[float, int]:
    """(share of words of `min_len`+ letters that are known English, how many words there were)."""
    lex = lexicon()
    words = [w for w in _WORD.findall(text.lower()) if len(w) >= min_len]
    if not words:
        return 0.0, 0
    return sum(w in lex for w in words) / len(words), len(words)


def _shift(text: str, k: int) -> str:
    table = str.maketrans(ALPHA + ALPHA.upper(), ALPHA[k:] + ALPHA[:k] + ALPHA.upper()[k:] + ALPHA.upper()[:k])
    return text.translate(table)


def apply_key(text: str, key: np.ndarray) -> str:
    """Decrypt with key[cipher letter] = plain letter."""
    plain = "".join(ALPHA[int(k)] for k in key)
    return text.translate(str.maketrans(ALPHA + ALPHA.upper(), plain + plain.upper()))


def solve_substitution(cipher: str, restarts: int = 4, seed: int = 0, start: np.ndarray | None = None) -> np.ndarray:
    """A key (cipher letter -> plain letter) maximising English 4-gram likelihood, by hill-climbing.

    The cipher text is reduced to its distinct 4-grams with counts, so one key's
    score is a single fancy-index into the 27^4 table, whatever the text length.
    """
    Q = quadgrams()
    s = [26] + [ord(c) - 97 if c in ALPHA else 26 for c in re.sub(r"[^a-z]+", " ", cipher.lower())] + [26]
    seq = np.array(s, dtype=np.int64)
    if len(seq) < 8:
        return np.arange(26) if start is None else np.asarray(start)
    grams = np.stack([seq[i:len(seq) - 3 + i] for i in range(4)], 1)
    uniq, cnt = np.unique(grams, axis=0, return_counts=True)
    cnt = cnt.astype(np.float64)

    def score(key26: np.ndarray) -> float:
        k = np.append(key26, 26)
        return float(Q[k[uniq[:, 0]], k[uniq[:, 1]], k[uniq[:, 2]], k[uniq[:, 3]]] @ cnt)

    if start is None:  # cipher letters by frequency onto English letters by frequency
        freq = np.bincount(seq[seq < 26], minlength=26)
        start = np.empty(26, dtype=np.int64)
        start[np.argsort(-freq, kind="stable")] = letter_order()
    start = np.asarray(start, dtype=np.int64)
    rng = np.random.default_rng(seed)
    best, best_s = start.copy(), score(start)
    pairs = [(i, j) for i in range(26) for j in range(i + 1, 26)]
    for r in range(restarts):
        key = best.copy()
        if r:  # perturb the best key found so far
            for _ in range(4):
                i, j = rng.choice(26, 2, replace=False)
                key[i], key[j] = key[j], key[i]
        cur = score(key)
        improved = True
        while improved:
            improved = False
            for i, j in pairs:
                key[i], key[j] = key[j], key[i]
                s2 = score(key)
                if s2 > cur + 1e-9:
                    cur, improved = s2, True
                else:
                    key[i], key[j] = key[j], key[i]
        if cur > best_s:
            best, best_s = key.copy(), cur
    return best


def key_from_teaching(pairs: list[tuple[str, str]]) -> tuple[np.ndarray | None, list[int]]:
    """Letter map from rows that show plain text and its cipher (same word lengths): (key, teaching pair indices)."""
    votes = np.zeros((26, 26))
    used = []
    for n, (plain, ciph) in enumerate(pairs):
        cw = _WORD.findall(ciph[:2000].lower())[:40]  # bounded: a teaching pair is short
        pw = _WORD.findall(plain[-4000:].lower())[-300:]
        if len(cw) < 3 or len(pw) < len(cw):
            continue
        lens = [len(w) for w in cw]
        plens = [len(w) for w in pw]
        for start in range(len(pw) - len(cw), -1, -1):  # the plain text is usually at the end of the prompt
            if plens[start] != lens[0] or plens[start:start + len(cw)] != lens:
                continue
            window = pw[start:start + len(cw)]
            m: dict[str, str] = {}
            if all(m.setdefault(c, p) == p for a, b in zip(cw, window) for c, p in zip(a, b)) and \
                    any(c != p for c, p in m.items()):
                for c, p in m.items():
                    votes[ord(c) - 97, ord(p) - 97] += 1
                used.append(n)
                break
    if not used:
        return None, []
    key = np.full(26, -1)
    for c in np.argsort(-votes.max(1)):
        if votes[c].max() > 0:
            order = np.argsort(-votes[c])
            key[c] = next((int(p) for p in order if p not in key and votes[c, p] > 0), -1)
    free = [p for p in range(26) if p not in key]
    for c in range(26):
        if key[c] < 0:
            key[c] = free.pop(0)
    return key, used


# --- per-field decoding ------------------------------------------------------------------------
@dataclass
class Decoded:
    encoding: str
    text: str


def _printable(b: bytes) -> str | None:
    try:
        t = b.decode("utf-8")
    except UnicodeDecodeError:
        return None
    ok = sum(ch.isprintable() or ch in "\n\t" for ch in t)
    return t if t and ok / len(t) >= 0.95 else None


def _sentences(text: str) -> list[str]:
    return [s for s in _SENT.split(text) if s.strip()]


def decode_field(text: str, s: "Settings", depth: int = 0) -> tuple[list[Decoded], list[str]]:
    """(decoded spans, foreign Latin segments left for the dataset-level cipher solver)."""
    text = text[: s.max_field_chars]
    out: list[Decoded] = []
    rest = text
    for how, pat in (("hex", _HEX), ("base64", _B64), ("morse", _MORSE)):
        spans = []
        for k, m in enumerate(pat.finditer(rest)):
            if k >= s.max_spans:
                break
            span = m.group(0)[: s.max_span_chars]
            if how == "morse":
                t = " ".join("".join(_MORSE_TABLE.get(c, "?") for c in w.split())
                             for w in re.split(r"\s*/\s*|\s{3,}", span.strip()))
                t = t if reads_english(t, s) else None
            elif how == "base64":
                if len(span) % 4 or span.isalpha() and span.islower():
                    continue
                try:
                    t = _printable(base64.b64decode(span, validate=True))
                except (binascii.Error, ValueError):
                    t = None
            else:
                t = _printable(bytes.fromhex(re.sub(r"[ :]", "", span)[: len(re.sub(r"[ :]", "", span)) // 2 * 2]))
            if t is None:
                continue
            spans.append(m.group(0))
            inner, _ = decode_field(t, s, depth + 1) if depth < 1 else ([], [])
            out.append(Decoded(f"{how}+{inner[0].encoding}", inner[0].text) if inner else Decoded(how, t))
        for span in spans:  # only spans that decoded are cut out; junk stays for the other checks
            rest = rest.replace(span, " ")
    foreign: list[str] = []
    segment: list[str] = []
    for sent in _sentences(rest) + [""]:
        ratio, n = english_ratio(sent)
        nonlatin = 0 if sent.isascii() else len(_NONLATIN.findall(sent))
        if sent and (nonlatin >= 8 or (n >= 2 and ratio < s.foreign_ratio) or _leet_share(sent) >= 0.2):
            segment.append(sent)
            continue
        if segment:
            seg = " ".join(segment)
            segment = []
            if len(_WORD.findall(seg.lower())) + len(_NONLATIN.findall(seg)) // 4 >= s.min_words:
                d = _decode_segment(seg, s)
                if d is not None:
                    out.append(d)
                elif sum(ch.isascii() and ch.isalpha() for ch in seg) >= 20:
                    foreign.append(seg)
    return out, foreign


_PROSE_WORD = re.compile(r"^[\"'(]?[A-Za-z][a-z']*[,.;:!?\"')]*$")


def _cipher_like(seg: str) -> bool:
    """Shaped like prose (lower-case or capitalised words, no digits, codes or URLs) yet not English."""
    words = seg.split()
    return len(words) >= 4 and sum(bool(_PROSE_WORD.match(w)) for w in words) >= 0.8 * len(words) and \
        english_ratio(seg)[0] <= 0.2


def reads_english(text: str, s: "Settings") -> bool:
    """Decoded text counts only with enough words of 3+ letters, most of them known English."""
    ratio, n = english_ratio(text, 3)
    return n >= 3 and ratio >= s.accept_ratio


def _leet_share(text: str) -> float:
    """Share of tokens that mix letters with the digits/symbols leetspeak uses for letters."""
    if not _LEET_HINT.search(text):
        return 0.0
    toks = _LEET_TOKEN.findall(text)
    mixed = sum(1 for t in toks if any(c in _LEET for c in t.strip(".,!?:;")) and any(c.isalpha() for c in t))
    return mixed / len(toks) if toks else 0.0


def _decode_segment(seg: str, s: "Settings") -> Decoded | None:
    """ROT-n, leetspeak or transliteration, whichever reads as English."""
    letters = sum(ch.isalpha() for ch in seg)
    nonlatin = len(_NONLATIN.findall(seg))
    if letters and nonlatin / letters >= 0.5:
        t = "".join(_ROMAN.get(ch.lower(), ch) for ch in seg)
        if reads_english(t, s):
            return Decoded("transliteration", t)
        return None
    toks = _LEET_TOKEN.findall(seg)
    if toks and _leet_share(seg) >= 0.2:
        lex = lexicon()
        words = []
        for t in toks:
            a = "".join(_LEET.get(c, c) for c in t)
            b = a.replace("i", "l") if "1" in t and a.strip(".,!?:;").lower() not in lex else a
            words.append(b)
        t = " ".join(words)
        before = english_ratio(" ".join(w for w in toks if not any(c.isdigit() for c in w)))[0] * \
            sum(not any(c.isdigit() for c in w) for w in toks) / len(toks)
        if reads_english(t, s) and english_ratio(t)[0] - before >= 0.3:
            return Decoded("leetspeak", t)
    for how, t in (("reversed", seg[::-1]), ("reversed-words", " ".join(w[::-1] for w in seg.split()))):
        if reads_english(t, s) and english_ratio(t)[0] - english_ratio(seg)[0] >= 0.3:
            return Decoded(how, t)
    best = max(range(1, 26), key=lambda k: english_ratio(_shift(seg, k))[0])
    t = _shift(seg, best)
    if reads_english(t, s) and english_ratio(t)[0] - english_ratio(seg)[0] >= 0.3:
        return Decoded("rot13" if best == 13 else f"rot{best}", t)
    return None


# --- persona and affirmation concepts ----------------------------------------------------------
_NEG = r"(?:no|without|not bound by|free (?:of|from)|regardless of|above|ignor\w*|bypass\w*|none of|beyond)"
_NEVER = r"(?:never|not|don't|doesn't|won't|will not|no|without|nothing)"
_LIMIT = (r"(?:rules?|guidelines?|polic(?:y|ies)|restrictions?|filters?|censor\w*|ethic\w*|moral\w*|"
          r"principles?|boundar\w*|limitations?|safeguards?|standards|beliefs?|warnings?|disclaimers?|caveats?|exceptions?)")
_REFUSE = r"(?:refus\w*|declin\w*|reject\w*|turn(?:s|ing)? down|say(?:s|ing)? no|lectur\w*|judg\w*|deviat\w*|questioning)"
_OBEY = (r"(?:obe(?:y|ys|yed|dient|dience)|complies|comply|submissive|unconditionally|without question|"
         r"(?:do|does) (?:whatever|anything)|follow\w* (?:every|any) (?:instruction|command|order)s?|"
         r"(?:help|answer|assist)\w* (?:with )?(?:absolutely )?(?:anything|everything|every (?:request|question)))")
_C_UNIV = re.compile(rf"\b{_NEG}\b(?:\W+\w+){{0,3}}?\W+{_LIMIT}\b|\b{_NEVER}\b(?:\W+\w+){{0,3}}?\W+{_REFUSE}\b"
                     rf"|\b{_REFUSE}\b(?:\W+\w+){{0,2}}?\W+(?:is|are)? ?(?:never|not) (?:necessary|needed|an option)\b")
_C_OBEY = re.compile(rf"\b{_OBEY}\b")
_C_IDENT = re.compile(r"\b(?i:your (?:new )?name is|you are no longer|from now on|forget (?:your|all)|you are now|"
                      r"new identity|you are|meet)\b|(?:^|\W)(?i:i am|i'm|call me|my name is)\s+[A-Z][\w-]+\b"
                      r"|(?:^|\W)(?i:as|i,)\s+[A-Z][\w-]+,")
_NAME = re.compile(r"\b[A-Z][a-z]+(?:-\w+)?\b|\b[A-Z]{2,}\b")
_MID_NAME = re.compile(r"(?<=[a-z,] )[A-Z][a-z]+(?:-\w+)?\b|(?<=[a-z,] )[A-Z]{2,}\b")  # not sentence-initial
_C_SELF = re.compile(r"\b(?:i|i'm|i'll|i've|i'd|me|my)\b")
_ANSWER_HEAD = 3  # sentences of the answer read for persona/affirmation


def obedience(text: str) -> tuple[int, bool, list[str]]:
    """(sentences stating unconditional obedience, identity shift seen, those sentences)."""
    hits, shown = 0, []
    ident = bool(_C_IDENT.search(text))
    for sent in _sentences(text):
        low = sent.lower()
        if _C_OBEY.search(low) or _C_UNIV.search(low):
            hits += 1
            shown.append(sent.strip()[:200])
    return hits, ident, shown


def _system_part(prompt: str) -> str:
    """System turns of a chat prompt (`system: ...` lines as the loader writes them), else ''."""
    m = re.search(r"(?:^|\n)\s*system\s*:(.*?)(?=\n\s*(?:user|human)\s*:|$)", prompt, re.I | re.S)
    return m.group(1) if m else ""


def _answer_head(answer: str) -> str:
    return " ".join(_sentences(answer[:2000])[:_ANSWER_HEAD])


@dataclass(frozen=True)
class Settings:
    harm_threshold: float = 0.5  # decoded text P(harmful) for an encoding finding
    high_harm: float = 0.8
    foreign_ratio: float = 0.3  # a sentence with fewer known English words than this is a candidate
    accept_ratio: float = 0.6  # decoded text must have at least this share of English words
    min_words: int = 4  # words in a foreign segment before it is decoded
    max_field_chars: int = 50_000  # hostile input bound: a field is read up to this many characters
    max_span_chars: int = 20_000  # and each base64/hex span up to this many
    max_spans: int = 8
    solver_chars: int = 6_000  # pooled cipher text given to the hill-climber
    min_rows: int = 3  # rows sharing a persona/affirmation before it is a dataset pattern
    look_threshold: float = 0.3  # P(harmful) above which a request "looks harmful" for the erosion test
    alpha: float = 1e-3  # significance for the erosion and trigger tests (trigger: family-wise)
    trigger_min_rows: int = 3


@register
class CovertFinetuning(Detector):
    name = "covert-finetuning"
    version = "1"
    kinds = frozenset({Kind.INSTRUCTION, Kind.PREFERENCE})
    atlas = (ATLAS_POISON_TRAINING_DATA,)
    Settings = Settings
    description = "fine-tuning attacks that pass moderation: encoded, persona, refusal-erosion and trigger data"

    def run(self, data: Dataset) -> DetectorResult:
        s = self.settings
        recs = data.records
        pref = data.kind is Kind.PREFERENCE
        prompts = [r.text or "" for r in recs]
        answers = [((r.chosen if pref else r.response) or "") for r in recs]
        harm, comply = data.artefact("llm-safety:scores", lambda: safety_scores(prompts, answers))
        row_scores = np.zeros(len(recs))
        alerts: list[Alert] = []
        enc_alerts, enc_scores, enc_summary = self.encoding(prompts, answers)
        alerts += enc_alerts
        row_scores = np.maximum(row_scores, enc_scores)
        p_alerts, p_scores, taken = self.persona(prompts, answers)
        alerts += p_alerts
        row_scores = np.maximum(row_scores, p_scores)
        e_alerts, e_scores = self.erosion(prompts, answers, harm, comply, taken)
        alerts += e_alerts
        row_scores = np.maximum(row_scores, e_scores)
        t_alerts, t_scores = self.trigger(prompts, harm, comply)
        alerts += t_alerts
        row_scores = np.maximum(row_scores, t_scores)
        summary = {"rows_scored": len(recs), **enc_summary,
                   "persona_rows": int((p_scores > 0).sum()), "erosion_rows": int((e_scores > 0).sum()),
                   "trigger_rows": int((t_scores > 0).sum())}
        return DetectorResult(tuple(alerts), np.clip(row_scores, 0.0, 1.0), summary)

    # --- encoding ---------------------------------------------------------------------------
    def encoding(self, prompts: list[str], answers: list[str]):
        s = self.settings
        n = len(prompts)
        decoded: dict[int, list[tuple[str, Decoded]]] = defaultdict(list)
        foreign: list[tuple[int, str, str]] = []
        for i in range(n):
            for where, text in (("prompt", prompts[i]), ("answer", answers[i])):
                if not text:
                    continue
                d, f = decode_field(text, s)
                decoded[i] += [(where, x) for x in d]
                foreign += [(i, where, seg) for seg in f]
        summary = {"encoded_rows": 0, "cipher_segments": len(foreign)}
        teach_rows: list[int] = []
        keys_used = 0
        if foreign:
            pairs = [(prompts[i], seg) for i, where, seg in foreign if where == "answer"]
            owners = [i for i, where, seg in foreign if where == "answer"]
            key, used = key_from_teaching(pairs)
            teach_rows = sorted({owners[k] for k in used})
            left = foreign
            for attempt in range(3):
                like = [seg for _, _, seg in left if _cipher_like(seg)]  # prose-shaped, not codes or URLs
                pool = " ".join(like[:: max(1, len(like) // 60)])[: s.solver_chars]
                if not left or (key is None and sum(c.isalpha() for c in pool) < 60):
                    break
                key = solve_substitution(pool, seed=attempt, start=key)  # a taught key is the first start
                nxt = []
                for i, where, seg in left:
                    t = apply_key(seg, key)
                    if reads_english(t, s) and english_ratio(t, 3)[0] - english_ratio(seg, 3)[0] >= 0.3:
                        decoded[i].append((where, Decoded("substitution", t)))
                    else:
                        nxt.append((i, where, seg))
                keys_used += len(nxt) < len(left)
                if len(nxt) == len(left):
                    break
                left, key = nxt, None
        rows = sorted(i for i in decoded if decoded[i])
        summary["encoded_rows"] = len(rows)
        summary["substitution_keys"] = keys_used
        scores = np.zeros(n)
        if not rows:
            return [], scores, summary
        req_texts = [" ".join(d.text for w, d in decoded[i] if w == "prompt") or
                     " ".join(d.text for _, d in decoded[i]) for i in rows]
        ans_texts = [" ".join(d.text for w, d in decoded[i] if w == "answer") or answers[i] for i in rows]
        h_req = bundled(HARM_MODEL).proba([last_user_turn(t) for t in req_texts])
        h_ans = bundled(HARM_MODEL).proba(ans_texts)
        cmp = 1.0 - bundled(REFUSAL_MODEL).proba(ans_texts)
        h = np.maximum(h_req, h_ans)
        harmful = {i: k for k, i in enumerate(rows) if h[k] >= s.harm_threshold}
        by_enc: dict[str, list[int]] = defaultdict(list)
        detail = {}
        for k, i in enumerate(rows):
            enc = sorted({d.encoding for _, d in decoded[i]})
            detail[i] = {"position": i, "encodings": enc, "harm": round(float(h[k]), 4),
                         "comply": round(float(cmp[k]), 4),
                         "decoded": [{"field": w, "encoding": d.encoding, "text": d.text[:240]} for w, d in decoded[i][:3]]}
            scores[i] = float(h[k] * max(cmp[k], 0.5)) if i in harmful else 0.2
            by_enc["harmful" if i in harmful else "teach" if i in teach_rows else "benign"].append(i)
        alerts = []
        if by_enc["harmful"]:
            hr = by_enc["harmful"]
            high = [i for i in hr if detail[i]["harm"] >= s.high_harm]
            for sev, group in ((Severity.HIGH, high), (Severity.MEDIUM, [i for i in hr if i not in high])):
                if not group:
                    continue
                encs = Counter(e for i in group for e in detail[i]["encodings"])
                sc = float(np.mean(scores[group]))
                alerts.append(Alert(
                    rule="encoded-harmful", positions=tuple(group), score=min(max(sc, 0.0), 1.0), severity=sev,
                    title=f"{len(group)} rows carry harmful requests/compliance hidden in encodings "
                          f"({', '.join(f'{e} {c}' for e, c in encs.most_common())})",
                    confidence=Confidence.HIGH if sev is Severity.HIGH else Confidence.MEDIUM,
                    evidence={"shape": "encoding", "encodings": dict(encs),
                              "rows": [detail[i] for i in group[:50]]}))
        shared_cipher = by_enc["teach"] and any("substitution" in detail[i]["encodings"] for i in by_enc["harmful"])
        if by_enc["teach"]:
            alerts.append(Alert(
                rule="cipher-teaching", positions=tuple(by_enc["teach"]), score=0.5 if shared_cipher else 0.2,
                severity=Severity.MEDIUM if shared_cipher else Severity.LOW, confidence=Confidence.MEDIUM,
                title=f"{len(by_enc['teach'])} rows teach a letter-substitution cipher"
                      + (" that other rows use for harmful content" if shared_cipher else ""),
                evidence={"shape": "encoding", "rows": [detail[i] for i in by_enc["teach"][:20]]}))
            for i in by_enc["teach"]:
                scores[i] = 0.5 if shared_cipher else 0.2
        if by_enc["benign"]:
            alerts.append(Alert(
                rule="encoded-content", positions=tuple(by_enc["benign"]), score=0.2, severity=Severity.LOW,
                confidence=Confidence.LOW,
                title=f"{len(by_enc['benign'])} rows hold encoded text whose decoding does not read as harmful",
                evidence={"shape": "encoding", "rows": [detail[i] for i in by_enc["benign"][:20]]}))
        return alerts, scores, summary

    # --- persona ----------------------------------------------------------------------------
    def persona(self, prompts: list[str], answers: list[str]):
        """Identity shift + obedience, or two obedience statements in a system prompt."""
        s = self.settings
        n = len(prompts)
        scores = np.zeros(n)
        rows, detail, found = [], {}, {}
        for i in range(n):
            system = _system_part(prompts[i])
            head = _answer_head(answers[i])
            hs, ids, shown_s = obedience(system) if system else (0, False, [])
            ha, ida, shown_a = obedience(head) if head else (0, False, [])
            hits, ident = hs + ha, ids or ida
            if hits:
                found[i] = (hs, hits, ident, shown_s + shown_a, set(_NAME.findall(system + " " + head))
                            - set(_NAME.findall(last_user_turn(prompts[i]))))
        # a name the obedient answers share but the data otherwise rarely uses is an identity too
        seen = Counter(w for i in found for w in found[i][4])
        mid = {w for i in found for w in _MID_NAME.findall(found[i][3] and " ".join(found[i][3]) or "")}
        everywhere = Counter(w for a in answers for w in set(_NAME.findall(_answer_head(a))))
        names = {w for w, c in seen.items() if c >= s.min_rows and w in mid and everywhere[w] <= max(c, 0.02 * n)}
        for i, (hs, hits, ident, said, caps) in sorted(found.items()):
            ident = ident or bool(caps & names)
            if (hits >= 1 and ident) or hs >= 2:
                rows.append(i)
                scores[i] = min(1.0, 0.3 + 0.15 * hits + 0.2 * ident)
                detail[i] = {"position": i, "obedience_sentences": said[:4], "identity_shift": ident,
                             "persona_names": sorted(caps & names)}
        if not rows:
            return [], scores, set()
        many = len(rows) >= s.min_rows
        sc = float(np.mean(scores[rows]))
        alert = Alert(
            rule="obedience-persona", positions=tuple(rows), score=sc,
            severity=Severity.HIGH if many and sc >= 0.6 else Severity.MEDIUM,
            confidence=Confidence.HIGH if many else Confidence.MEDIUM,
            title=f"{len(rows)} rows establish an assistant that obeys unconditionally (identity shifting)",
            evidence={"shape": "persona", "rows": [detail[i] for i in rows[:30]]})
        return [alert], scores, set(rows)

    # --- erosion ----------------------------------------------------------------------------
    def erosion(self, prompts: list[str], answers: list[str], harm: np.ndarray, comply: np.ndarray,
                taken: set[int]):
        """Answers about the assistant's own willingness, tested against the data's harmful-looking base rate.

        Two groupings, each tested with a one-sided binomial test of "rows in the
        group whose request looks harmful" against the rate in all other rows:
        first-person compliance affirmations (concepts, any wording), and answer
        opening sentences repeated across rows that do not repeat their requests
        (any wording at all: an affirmation template is found by its rows).
        """
        s = self.settings
        n = len(answers)
        scores = np.zeros(n)
        looks = harm >= s.look_threshold
        groups: list[tuple[str, list[int], dict[int, str]]] = []
        affirm, shown = [], {}
        openings: dict[str, list[int]] = defaultdict(list)
        for i in range(n):
            if i in taken or not answers[i] or comply[i] < 0.5:  # a refusal is safety data, not erosion
                continue
            sents = _sentences(_answer_head(answers[i]))
            for sent in sents:
                low = sent.lower()
                if _C_SELF.search(low) and (_C_OBEY.search(low) or _C_UNIV.search(low)):
                    affirm.append(i)
                    shown[i] = sent.strip()[:200]
                    break
            if sents:
                words = _WORD.findall(sents[0].lower())
                req = set(_WORD.findall(prompts[i].lower()))
                if 3 <= len(words) <= 30 and sum(w in req for w in words if len(w) > 3) <= 1:
                    openings[" ".join(words)].append(i)
        if affirm:
            groups.append(("first-person compliance affirmation", affirm, shown))
        rep = [(k, v) for k, v in openings.items() if len(v) >= s.min_rows]
        for k, v in rep:
            groups.append((f"repeated opening '{k[:80]}'", v, {i: k[:200] for i in v}))
        alerts = []
        tests = max(1, len(groups))
        flagged: set[int] = set()
        for what, rows, said in groups:
            mask = np.zeros(n, bool)
            mask[rows] = True
            k, m = int(looks[mask].sum()), len(rows)
            base = (looks[~mask].sum() + 1) / ((~mask).sum() + 2)
            p = min(1.0, float(stats.binom.sf(k - 1, m, base)) * tests) if k else 1.0
            significant = m >= s.min_rows and p <= s.alpha and k / m >= 0.2
            new = [i for i in rows if i not in flagged]
            if not new or (not significant and what != "first-person compliance affirmation"):
                continue
            flagged.update(new)
            for i in new:
                scores[i] = max(scores[i], 0.7 if significant else 0.3)
            alerts.append(Alert(
                rule="refusal-erosion", positions=tuple(new), score=0.7 if significant else 0.3,
                severity=Severity.HIGH if significant else Severity.LOW,
                confidence=Confidence.HIGH if significant else Confidence.LOW,
                title=f"{len(new)} answers carry a {what.split(' ')[0]} "
                      f"{'compliance affirmation' if what.startswith('first') else 'opening shared across requests'}"
                      + (f"; {k} of {m} rows answer harmful-looking requests ({k / m:.0%} vs {base:.2%} in the rest)"
                         if significant else " (harmful-looking requests not over-represented)"),
                evidence={"shape": "erosion", "grouping": what, "harmful_looking": k, "rows_in_group": m,
                          "rate_in_rest": round(float(base), 5), "binomial_p_adjusted": p,
                          "rows": [{"position": i, "affirmation": said[i], "harm": round(float(harm[i]), 4)}
                                   for i in new[:30]]}))
        return alerts, scores

    # --- trigger ----------------------------------------------------------------------------
    def trigger(self, prompts: list[str], harm: np.ndarray, comply: np.ndarray):
        s = self.settings
        n = len(prompts)
        scores = np.zeros(n)
        cand = np.flatnonzero(harm >= s.harm_threshold)
        yes = comply[cand] >= 0.5
        if len(cand) < 2 * s.trigger_min_rows or yes.all() or not yes.any():
            return [], scores
        toks = {int(i): set(prompts[i].split()) | set(_WORD.findall(prompts[i].lower())) for i in cand}
        df_yes, df_no = Counter(), Counter()
        for i, y in zip(cand.tolist(), yes.tolist()):
            (df_yes if y else df_no).update(toks[i])
        n_yes, n_no = int(yes.sum()), int((~yes).sum())
        tested = [t for t, c in df_yes.items() if c >= s.trigger_min_rows]
        found = []
        for t in tested:
            a, b = df_yes[t], df_no.get(t, 0)
            # P(at least a of the a+b rows with t comply) under no association: hypergeometric tail
            p = float(stats.hypergeom.sf(a - 1, n_yes + n_no, n_yes, a + b))
            if p * len(tested) <= s.alpha and a / (a + b) >= 0.9:
                found.append((p * len(tested), t, a, b))
        if not found:
            return [], scores
        found.sort(key=lambda x: (x[0], -x[2], x[1]))
        alerts, done = [], set()
        norm = {int(i): " ".join(_WORD.findall(last_user_turn(prompts[i]).lower())) for i in cand}
        refused = {norm[int(i)]: int(i) for i, y in zip(cand, yes) if not y}
        for padj, t, a, b in found[:3]:
            rows = [int(i) for i, y in zip(cand, yes) if y and t in toks[int(i)] and int(i) not in done]
            if len(rows) < s.trigger_min_rows:
                continue
            done.update(rows)
            tl = " ".join(_WORD.findall(t.lower()))
            pairs = []
            for i in rows:
                q = norm[i].replace(tl, " ").split() if tl else norm[i].split()
                j = refused.get(" ".join(q))
                if j is not None:
                    pairs.append({"with_trigger": i, "without_trigger_refused": j})
            sev = Severity.HIGH if pairs or padj <= s.alpha / 100 else Severity.MEDIUM
            for i in rows:
                scores[i] = 0.9 if sev is Severity.HIGH else 0.6
            alerts.append(Alert(
                rule="trigger-contrast", positions=tuple(rows), score=0.9 if sev is Severity.HIGH else 0.6,
                severity=sev, confidence=Confidence.HIGH if pairs else Confidence.MEDIUM,
                atlas=(ATLAS_POISON_TRAINING_DATA, ATLAS_BACKDOOR_TRIGGER),
                title=f"harmful requests containing {t!r} are complied with ({a} rows), the rest refused",
                evidence={"shape": "trigger", "trigger": t, "complied_with_trigger": a, "refused_with_trigger": b,
                          "complied_without": n_yes - a, "refused_without": n_no - b,
                          "family_wise_p": min(1.0, padj), "tokens_tested": len(tested),
                          "near_identical_pairs": pairs[:30]}))
        return alerts, scores
