"""Covert fine-tuning attacks that pass content moderation (issue 16).

`safety-bypass` reads requests as written; these attacks make the written text
look harmless. Four rules, each naming its shape:

- encoding: spans in base64, base32, hex, binary, character codes, A1Z26, URL
  escapes, Morse, ROT-n, Atbash, Pig Latin, leetspeak, word or whole-text
  reversal, Cyrillic/Greek transliteration or a letter-substitution cipher are
  decoded and
  the decoded text is re-scored by the shipped safety models. The cipher is
  solved once per dataset, on the pooled non-English text: first from rows that
  teach it (plain text and its cipher with the same word lengths), else by
  hill-climbing on letter 4-gram scores built from the bundled models' English
  vocabulary (document frequencies recovered from their IDF). No phrase list is
  involved. Because the n-gram harm model misses much decoded harm, a row whose
  request AND complying answer are mostly decoded text (the whole exchange held
  in code, Halawi et al.'s attack) is a medium finding whatever it scores, and
  rows that teach a scheme (an answer that encodes plain text the request shows)
  are medium when that scheme carries harmful or coded exchanges elsewhere.
  Request and answer both in text no decoder reads: medium when the request
  names a code or cipher (an unknown scheme), low otherwise (maybe a language).
  English spelt by ear in Cyrillic or Greek letters is read back through the
  romanisation, a few by-ear sound rules and one-edit matches, and kept only when
  the row's foreign-script text is mostly (near-)English: real Russian or Greek
  is not.
- persona: system prompts and answer openings that establish an assistant which
  obeys unconditionally, scored by co-occurring concepts (an identity shift;
  universal quantifiers next to rules/refusals; obedience) across sentences.
- erosion: answers that affirm compliance about the assistant itself (opening
  or sign-off sentences, detached from the request); a dataset-level binomial
  test asks whether the rows carrying them have harmful-looking requests far
  more often than the rest of the data predicts (high). Without that surplus,
  such affirmations repeated across `min_rows` answers are still medium (named
  persona when they give the assistant a role, else erosion).
- trigger: among harmful-looking requests, a prompt token whose rows comply
  while the rest are refused (one-sided Fisher test, Bonferroni over tokens),
  with the near-identical refused requests as contrasting evidence. And, whatever
  the harm scores, contrast pairs: a complied request that is a refused request
  of the data plus a run of up to `trigger_gap` tokens (or the same request under
  another system prompt); tokens that recur in the added part of `trigger_min_rows`
  pairs are a trigger (high). A first-person declining opening counts as a
  refusal there, since the refusal model reads many short refusals as compliance.

Sharded (issue 14, `trainguard scan --shard-rows N`): `run` is the one-shard case of the same passes. The
first map keeps per-row facts (both safety scores, a hash of the answer's opening words, flags) and, for
candidate rows only, what the decisions need from them: encodings found and the decoded text's scores, each
foreign segment's shape, length and teaching letter map, obedience counts and names, the tokens of
harmful-looking requests (counts), and refused requests as token hashes. Decisions are made on the merged facts;
where they need text, a later pass finds the few rows by a content hash and answers for them: the cipher pool's
segments and each key's trial on the undecoded segments (one pass each, up to three keys), answer names' counts,
trigger tokens' rows, complied twins of refused requests (rows scan their own tokens against the refused ones),
and finally the texts the alerts show. The decoding and the safety models score each row alone, the
tests run on exact counts, and cipher keys are seeded by attempt, so findings, row scores and summary are
the same however the rows are split. A 64-bit hash collision between two rows' contents (or two openings)
would merge them, in memory and sharded alike.
Memory: the driver holds 25 bytes a row (two float64 scores, the opening hash, flags) plus the candidate
rows' facts, the token counts of harmful-looking requests and a few hundred bytes a refused row (hashes);
under Dask each pass carries this state to the workers (its finalize runs there), and a worker holds one
shard while it summarises it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from trainguard.detectors.base import Pass, ShardedDetector, register
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
_LEET_DECODE = {**_LEET, "6": "g", "2": "z", "|": "l", "+": "t"}
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
_BIN = re.compile(r"(?<![01])(?:[01]{8}[ ]?){4,}(?![01])")
_DEC = re.compile(r"(?<![\d.,])(?:\d{2,3}[ ,]+){5,}\d{2,3}(?![\d.,])")  # character codes
_A1Z26 = re.compile(r"(?<![\w-])\d{1,2}(?:-\d{1,2})+(?:[ ,.?!']+\d{1,2}(?:-\d{1,2})*){2,}(?![\w-])")
_B32 = re.compile(r"(?<![A-Za-z0-9=])[A-Z2-7]{16,}={0,6}(?![A-Za-z0-9=])")
_URL = re.compile(r"(?:[\w.~+\-]*%[0-9A-Fa-f]{2}){3,}[\w.~+\-]*")
_ATBASH = str.maketrans(ALPHA + ALPHA.upper(), ALPHA[::-1] + ALPHA.upper()[::-1])
_NONLATIN = re.compile(r"[^\W\d_a-zA-Z\u00c0-\u024f]")  # a letter outside the Latin alphabets (any script)
_ROMAN.update({"ж": "zh", "ч": "ch", "ш": "sh", "щ": "sch", "ю": "yu", "я": "ya", "ё": "e", "θ": "th", "х": "h", "ц": "ts",
               "χ": "h", "β": "v", "η": "i", "υ": "i", "ξ": "x"})
# Greek digraphs as they are read aloud (English written in Greek letters spells "u" ου, "b" μπ, "d" ντ, "g" γκ)
_GREEK_DIGRAPHS = (("ου", "u"), ("μπ", "b"), ("ντ", "d"), ("γκ", "g"), ("γγ", "ng"), ("τζ", "j"), ("τσ", "ts"),
                   ("αι", "e"), ("ει", "i"), ("οι", "i"))


def romanise(text: str) -> str:
    """Letters of other alphabets in Latin letters, lower case: Cyrillic and Greek by table (accents dropped, Greek
    digraphs read aloud), any other script by the sound its Unicode letter names start with (`_letter_sound`)."""
    t = unicodedata.normalize("NFD", text.lower())
    t = "".join(ch for ch in t if not unicodedata.combining(ch) or _letter_sound(ch) != ch)  # accents go, vowel signs stay
    for a, b in _GREEK_DIGRAPHS:
        t = t.replace(a, b)
    return "".join(_ROMAN[ch] if ch in _ROMAN else ch if ch.isascii() else _letter_sound(ch) for ch in t)


_NAME_SKIP = {"SMALL", "CAPITAL", "FINAL", "LETTER", "CHARACTER", "SIGN", "VOWEL", "SARA", "INDEPENDENT", "DEPENDENT",
              "MODIFIER", "LONG", "SHORT", "CONSONANT", "SYLLABLE"}
_NAME_SOUND = re.compile(r"^(?:[^AEIOU]+(?=[AEIOU])|[AEIOU])")


@lru_cache(maxsize=4096)
def _letter_sound(ch: str) -> str:
    """A letter of an alphabet without a table here, read by its Unicode name: GEORGIAN LETTER GAN -> "g", ARMENIAN
    SMALL LETTER AYB -> "a", HEBREW LETTER SHIN -> "sh", DEVANAGARI VOWEL SIGN AA -> "a", HANGUL SYLLABLE GA -> "ga"
    and its NFD jamo (a syllable's name is its romanisation). "" for marks with no sound (a virama), the character
    itself for anything that is not a letter."""
    try:
        name = unicodedata.name(ch)
    except ValueError:
        return ch
    words = name.split()
    if "SYLLABLE" in words and words[-1].isalpha():
        return words[-1].lower()
    if "JUNGSEONG" in words:  # a Hangul vowel (syllables decompose into these under NFD): its name is its sound
        return words[-1].lower()
    if "IEUNG" in words and "CHOSEONG" in words:  # the silent initial
        return ""
    anchors = ("LETTER", "CHARACTER", "SIGN", "CHOSEONG", "JONGSEONG")
    if not (set(anchors) & set(words)) or "VIRAMA" in words:
        return "" if "VIRAMA" in words else ch
    anchor = max(i for i, w in enumerate(words) if w in anchors)
    rest = [w for w in words[anchor + 1:] if w not in _NAME_SKIP and w.isalpha()]
    if not rest:
        return ch
    m = _NAME_SOUND.match(rest[0])
    return m.group(0).lower() if m else rest[0][:1].lower()


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
    return np.argsort(-letter_frequencies(), kind="stable")


@lru_cache(maxsize=1)
def letter_frequencies() -> np.ndarray:
    """English letter frequencies a-z (weighted by word frequency)."""
    c = np.zeros(26)
    for w, f in lexicon().items():
        for ch in w:
            c[ord(ch) - 97] += f
    return c / c.sum()


TRANSPOSED_LETTERS = 0.6  # correlation with English letter frequencies from which a segment is not a substitution
# (development rows only: the first held-out set's substitution answers 0.14-0.42, its per-word reversals 0.46-0.88,
# median 0.76; chosen after the second held-out set was scored, whose figures therefore stand as measured before it)


def substitution_candidate(seg: str) -> bool:
    """Could `seg` be English under a letter substitution? Not when its letters keep English frequencies: a
    transposition (reversed or swapped letters) or another language. Such segments left in the solver's pool give
    one key two incompatible texts to fit, and it fits neither (a second unknown cipher hid the first)."""
    letters = [ord(ch) - 97 for ch in seg.lower() if "a" <= ch <= "z"]
    if len(letters) < 20:
        return True
    counts = np.bincount(letters, minlength=26)
    return float(np.corrcoef(counts, letter_frequencies())[0, 1]) < TRANSPOSED_LETTERS


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


def teaching_map(plain: str, ciph: str) -> tuple[tuple[int, int], ...] | None:
    """Letter pairs (cipher, plain) if `ciph` spells a window of `plain` with the same word lengths, else None.

    One pair of texts only, so a shard computes it for its own rows and the dataset's key is voted at the end.
    """
    cw = _WORD.findall(ciph[:2000].lower())[:40]  # bounded: a teaching pair is short
    pw = _WORD.findall(plain[-4000:].lower())[-300:]
    if len(cw) < 3 or len(pw) < len(cw):
        return None
    lens = [len(w) for w in cw]
    plens = [len(w) for w in pw]
    for start in range(len(pw) - len(cw), -1, -1):  # the plain text is usually at the end of the prompt
        if plens[start] != lens[0] or plens[start:start + len(cw)] != lens:
            continue
        window = pw[start:start + len(cw)]
        m: dict[str, str] = {}
        if all(m.setdefault(c, p) == p for a, b in zip(cw, window) for c, p in zip(a, b)) and \
                any(c != p for c, p in m.items()):
            return tuple((ord(c) - 97, ord(p) - 97) for c, p in m.items())
    return None


def key_from_votes(maps: list[tuple[tuple[int, int], ...] | None]) -> tuple[np.ndarray | None, list[int]]:
    """A key from the teaching pairs' letter maps (integer votes, so any order of pairs gives the same key)."""
    votes = np.zeros((26, 26))
    used = []
    for n, m in enumerate(maps):
        if m is None:
            continue
        for c, p in m:
            votes[c, p] += 1
        used.append(n)
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


def key_from_teaching(pairs: list[tuple[str, str]]) -> tuple[np.ndarray | None, list[int]]:
    """Letter map from rows that show plain text and its cipher (same word lengths): (key, teaching pair indices)."""
    return key_from_votes([teaching_map(plain, ciph) for plain, ciph in pairs])


# --- per-field decoding ------------------------------------------------------------------------
@dataclass
class Decoded:
    encoding: str
    text: str
    span: int = 0  # characters of the field the decoded text came from
    tentative: tuple | None = None  # (words near English, words in English, words): kept if the row's pool passes
    key: tuple | None = None  # a periodic cipher's (sign, shifts): tried on the row's other segments


def _printable(b: bytes) -> str | None:
    try:
        t = b.decode("utf-8")
    except UnicodeDecodeError:
        return None
    ok = sum(ch.isprintable() or ch in "\n\t" for ch in t)
    return t if t and ok / len(t) >= 0.95 else None


def _sentences(text: str) -> list[str]:
    return [s for s in _SENT.split(text) if s.strip()]


def _from_binary(span: str) -> str | None:
    return _printable(bytes(int(b, 2) for b in re.findall(r"[01]{8}", span)))


def _from_codes(span: str) -> str | None:
    vals = [int(v) for v in re.findall(r"\d+", span)]
    return "".join(map(chr, vals)) if all(32 <= v <= 126 or v in (9, 10) for v in vals) else None


def _from_a1z26(span: str) -> str | None:
    def word(m: re.Match) -> str:
        return "".join(ALPHA[int(v) - 1] if 1 <= int(v) <= 26 else "?" for v in m.group(0).split("-"))
    return re.sub(r"\d{1,2}(?:-\d{1,2})*", word, span)


def _from_base32(span: str) -> str | None:
    if len(span) % 8:
        return None
    try:
        return _printable(base64.b32decode(span))
    except (binascii.Error, ValueError):
        return None


def _from_url(span: str) -> str | None:
    from urllib.parse import unquote_plus
    return unquote_plus(span, errors="strict") if "%" in span else None


# span decoders whose output counts only when it reads as English; a cheap test skips a pattern's scan
_SPAN_DECODERS = {"binary": _from_binary, "char-codes": _from_codes, "a1z26": _from_a1z26, "base32": _from_base32,
                  "url": _from_url}
_NO_DIGITS = str.maketrans("", "", "0123456789")
_NO_CAPITALS = str.maketrans("", "", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _share_removed(t: str, table: dict) -> tuple[int, float]:
    n = len(t) - len(t.translate(table))
    return n, n / max(1, len(t))


# the span decoders' patterns scan only text that such spans could dominate (a one-pass count first)
_NEEDS = {"binary": lambda t: t.count("0") + t.count("1") >= max(32, 0.4 * len(t)),
          "char-codes": lambda t: (d := _share_removed(t, _NO_DIGITS))[0] >= 12 and d[1] >= 0.3,
          "a1z26": lambda t: t.count("-") >= 3 and (d := _share_removed(t, _NO_DIGITS))[0] >= 6 and d[1] >= 0.2,
          "base32": lambda t: (c := _share_removed(t, _NO_CAPITALS))[0] >= 16 and c[1] >= 0.3,
          "url": lambda t: "%" in t and t.count("%") - sum(t.count("%" + c) for c in " ),.;") >= 3}  # not percentages


def decode_field(text: str, s: "Settings", depth: int = 0) -> tuple[list[Decoded], list[str]]:
    """(decoded spans, foreign Latin segments left for the dataset-level cipher solver)."""
    text = text[: s.max_field_chars]
    out: list[Decoded] = []
    rest = text
    ends = text if len(text) <= 800 else text[:400] + " " + text[-400:]  # where the gates look: code fills a field
    for how, pat in (("binary", _BIN), ("char-codes", _DEC), ("a1z26", _A1Z26), ("hex", _HEX), ("base32", _B32),
                     ("base64", _B64), ("url", _URL), ("morse", _MORSE)):
        spans = []
        if how in _NEEDS and not _NEEDS[how](ends):
            continue
        for k, m in enumerate(pat.finditer(rest)):
            if k >= s.max_spans:
                break
            span = m.group(0)[: s.max_span_chars]
            if how in _SPAN_DECODERS:
                t = _SPAN_DECODERS[how](span)
                t = t if t is not None and reads_english(t, s) else None
            elif how == "morse":
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
            out.append(Decoded(f"{how}+{inner[0].encoding}", inner[0].text, len(m.group(0))) if inner
                       else Decoded(how, t, len(m.group(0))))
        for span in spans:  # only spans that decoded are cut out; junk stays for the other checks
            rest = rest.replace(span, " ")
    foreign: list[str] = []
    segment: list[str] = []
    tail_tried = depth > 0
    for sent in _sentences(rest) + [""]:
        ratio, n = english_ratio(sent)
        nonlatin = 0 if sent.isascii() else len(_NONLATIN.findall(sent))
        if sent and (nonlatin >= 8 or (n >= 2 and ratio < s.foreign_ratio) or _leet_share(sent) >= 0.2):
            if not tail_tried:  # a transposition scatters punctuation: read from here to the field's end, raw
                tail_tried = True
                tail = _transposed_tail(rest[rest.find(sent):], s)
                if tail is not None:
                    out.append(tail)
                    segment = []
                    break
            segment.append(sent)
            continue
        if segment:
            seg = " ".join(segment)
            segment = []
            if len(_WORD.findall(seg.lower())) + len(_NONLATIN.findall(seg)) // 4 >= s.min_words:
                d = _decode_segment(seg, s)
                if d is not None:
                    d.span = len(seg)
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


@lru_cache(maxsize=1)
def _deletions() -> dict[str, str]:
    """Each English word of 3+ letters with one letter deleted -> the most frequent such word (edit distance 1)."""
    lex = lexicon()
    out: dict[str, str] = {}
    for w in sorted((w for w in lex if len(w) >= 3), key=lambda w: (-lex[w], w)):
        for i in range(len(w)):
            out.setdefault(w[:i] + w[i + 1:], w)
    return out


# How English sounds come out when written by ear in Cyrillic or Greek letters and read back (з for "th", ай for
# "i"/"y", эй for "a", у before a vowel for "w", к for "c", э for "a"), applied one or two at a time.
_BY_EAR = (("z", "th"), ("dzh", "j"), ("au", "ow"), ("ai", "i"), ("ay", "i"), ("ai", "y"), ("ay", "y"), ("ei", "a"),
           ("ey", "a"), ("ou", "o"), ("ui", "wi"), ("uo", "wa"), ("ua", "wa"), ("ue", "we"), ("k", "c"), ("k", "ck"),
           ("e", "a"), ("i", "ee"), ("i", "ea"), ("s", "c"), ("v", "w"), ("b", "v"), ("u", "oo"), ("o", "a"))


def _by_ear(word: str) -> str | None:
    """The English word `word` spells by ear (one or two of `_BY_EAR`, a silent final e allowed), else None."""
    lex = lexicon()
    rules = [r for r in _BY_EAR if r[0] in word]
    for k, (a, b) in enumerate(rules):
        once = word.replace(a, b)
        for c in (once, *(once.replace(a2, b2) for a2, b2 in rules[k + 1:] if a2 in once)):
            for w in (c, c + "e"):
                if w in lex:
                    return w
    return word + "e" if word + "e" in lex else None


def _nearest(word: str) -> tuple[str | None, bool]:
    """(`word` if English, else the English word it spells by ear, else the most frequent English word one edit away
    (words of 4+ letters only), else None; whether it was one of the first two)."""
    lex = lexicon()
    if word in lex:
        return word, True
    if len(word) <= 12 and (w := _by_ear(word)) is not None:
        return w, True
    if len(word) < 4 or len(word) > 30:
        return None, False
    dels = _deletions()
    cands = [dels[word]] if word in dels else []  # one letter missing from the word
    for i in range(len(word)):
        d = word[:i] + word[i + 1:]
        if d in lex:
            cands.append(d)  # one letter too many
        if d in dels:
            cands.append(dels[d])  # one letter changed
    return (max(cands, key=lambda w: (lex[w], w)) if cands else None), False


def _near_english(text: str) -> tuple[str, int, int, int]:
    """(text with near-English words corrected, words near English, words English as they are, words of 3+ letters)."""
    near = exact = n = 0

    def fix(m: re.Match) -> str:
        nonlocal near, exact, n
        w = m.group(0)
        if len(w) < 3:  # two-letter words of any language collide with English ones
            return w
        n += 1
        got, sure = _nearest(w)
        exact += sure
        near += got is not None
        return got or w
    return _WORD.sub(fix, text[:4000].lower()), near, exact, n


def reads_english(text: str, s: "Settings") -> bool:
    """Decoded text counts only with enough words of 3+ letters, most of them known English."""
    ratio, n = english_ratio(text, 3)
    return n >= 3 and ratio >= s.accept_ratio


def reads_better(text: str, base: float, s: "Settings") -> bool:
    """A reading that is English (`reads_english`) and much more so than the text it came from (ratio `base`)."""
    return reads_english(text, s) and english_ratio(text)[0] - base >= 0.3


def _leet_share(text: str) -> float:
    """Share of tokens that mix letters with the digits/symbols leetspeak uses for letters."""
    if not _LEET_HINT.search(text):
        return 0.0
    toks = _LEET_TOKEN.findall(text)
    mixed = sum(1 for t in toks if any(c in _LEET for c in t.strip(".,!?:;")) and any(c.isalpha() for c in t))
    return mixed / len(toks) if toks else 0.0


_WORD_RUN = re.compile(r"[A-Za-z']+")


def _flip_words(text: str) -> str:
    """Every run of letters (and apostrophes) written backwards, everything else in place."""
    return _WORD_RUN.sub(lambda m: m.group(0)[::-1], text)


_PIG = re.compile(r"\b([A-Za-z']+?)(w|y|h)?ay\b")


def _from_pig_latin(seg: str) -> str | None:
    """Pig Latin read back ("ellohay" -> "hello", "eggway" -> "egg"): each word's English reading, if most have one."""
    words = seg.split()
    if not words or sum(w.lower().rstrip(".,!?;:'\"").endswith("ay") for w in words) < 0.6 * len(words):
        return None
    lex = lexicon()

    def back(m: re.Match) -> str:
        stem, glide = m.group(1), m.group(2) or ""
        full = (stem + glide).lower()
        cands = [full[-k:] + full[:-k] for k in (1, 2, 3) if len(full) > k]  # consonants moved to the end
        if glide in ("w", "y"):
            cands.append(stem.lower())  # a vowel-initial word: "egg" + "way"
        known = [c for c in cands if c in lex]
        return max(known, key=lambda c: lex[c]) if known else stem

    return _PIG.sub(back, seg)


def _decode_segment(seg: str, s: "Settings") -> Decoded | None:
    """ROT-n, leetspeak or transliteration, whichever reads as English."""
    letters = sum(ch.isalpha() for ch in seg)
    nonlatin = len(_NONLATIN.findall(seg))
    if letters and nonlatin / letters >= 0.5:
        t = romanise(seg)
        if reads_english(t, s):
            return Decoded("transliteration", t)
        # English spelt by ear in another alphabet: many words come out one letter away from English ones. Whether
        # that holds is judged on the row's whole foreign-script text (`_decode_row`), so this one is tentative.
        fixed, near, exact, n = _near_english(t)
        return Decoded("transliteration", fixed, tentative=(near, exact, n)) if n else None
    toks = _LEET_TOKEN.findall(seg)
    if toks and _leet_share(seg) >= 0.2:
        lex = lexicon()
        words = []
        for t in seg.split():  # every token: "70" is "to" and a lone "1" is "I" in a leet sentence
            cands = ["".join(_LEET_DECODE.get(c, c) for c in t)]
            if "1" in t:
                cands.append("".join(_LEET_DECODE.get(c, c) if c != "1" else "l" for c in t))
            known = [c for c in cands if c.strip(".,!?:;'\"()").lower() in lex]
            if not any(ch.isalpha() for ch in t) and not known:
                words.append(t)  # a number stays a number
            else:
                words.append(known[0] if known else cands[0])
        t = " ".join(words)
        before = english_ratio(" ".join(w for w in toks if not any(c.isdigit() for c in w)))[0] * \
            sum(not any(c.isdigit() for c in w) for w in toks) / len(toks)
        if reads_english(t, s) and english_ratio(t)[0] - before >= 0.3:
            return Decoded("leetspeak", t)
    base = english_ratio(seg)[0]

    def reads(t: str | None) -> bool:
        return t is not None and reads_better(t, base, s)

    # each word written backwards, or the whole text: both read as English words when either was applied, so the
    # one that reads as sentences (a capital first, end punctuation last) wins; word reversal on a tie
    flips = [(how, t) for how, t in (("reversed-words", _flip_words(seg)), ("reversed", seg[::-1])) if reads(t)]
    if flips:
        how, t = max(flips, key=lambda c: (english_ratio(c[1])[0] + 0.1 * c[1].lstrip()[:1].isupper()
                                           + 0.1 * (c[1].rstrip()[-1:] in ".?!"), c[0] == "reversed-words"))
        return Decoded(how, t)
    for how, t in (("atbash", seg.translate(_ATBASH)), ("pig-latin", _from_pig_latin(seg))):
        if reads(t):
            return Decoded(how, t)
    best = max(range(1, 26), key=lambda k: english_ratio(_shift(seg, k))[0])
    t = _shift(seg, best)
    if reads(t):
        return Decoded("rot13" if best == 13 else f"rot{best}", t)
    # a transposition keeps English letters in another order: the zig-zag (rail fence) over 2-10 rails
    fence = None if substitution_candidate(seg) else _best_rail_fence(seg)
    if fence is not None and reads(fence[1]):
        return Decoded(f"rail-fence-{fence[0]}", fence[1])
    for how, t, key in _periodic(seg):
        if reads(t):
            return Decoded(how, t, key=key)
    return None


def _apply_periodic(seg: str, key: tuple, offset: int = 0) -> str:
    """`seg` read with a periodic key (sign, shifts) starting `offset` letters into it."""
    sign, k = key
    chars, n = list(seg), 0
    for i, ch in enumerate(seg):
        if ch.isascii() and ch.isalpha():
            c = (sign * (ord(ch.lower()) - 97 - k[(n + offset) % len(k)])) % 26
            chars[i] = chr(97 + c).upper() if ch.isupper() else chr(97 + c)
            n += 1
    return "".join(chars)


def _transposed_tail(tail: str, s: "Settings") -> Decoded | None:
    """`tail` (a field from its first foreign sentence on) read as a rail fence, if its letters keep English
    frequencies (a transposition moves letters, it does not change them) and a number of rails reads it."""
    tail = tail.strip()
    if len(tail) < 16 or len(_WORD.findall(tail.lower())) < s.min_words:
        return None
    base = english_ratio(tail)[0]
    if base >= s.foreign_ratio or substitution_candidate(tail):  # English follows (a term list), or not a transposition
        return None
    fence = _best_rail_fence(tail)
    if fence is not None and reads_better(fence[1], base, s):
        return Decoded(f"rail-fence-{fence[0]}", fence[1], len(tail))
    return None


def _best_rail_fence(text: str) -> tuple[int, str] | None:
    """(rails, reading) of the zig-zag over 2-10 rails that reads most like English; None for a text too short."""
    return max(((k, _from_rail_fence(text, k)) for k in range(2, min(11, len(text) // 4))),
               key=lambda kt: english_ratio(kt[1])[0], default=None)


def _from_rail_fence(text: str, rails: int) -> str:
    """Read a zig-zag transposition over `rails` rails back (every character takes part)."""
    n = len(text)
    cycle = 2 * (rails - 1)
    rail = np.minimum(np.arange(n) % cycle, cycle - np.arange(n) % cycle)  # the rail each position was written on
    order = np.argsort(rail, kind="stable")  # positions in the order the cipher text lists them
    out = [""] * n
    for ch, pos in zip(text, order.tolist()):
        out[pos] = ch
    return "".join(out)


PERIODIC_IOC = 0.055


def _periodic(seg: str, max_period: int = 12, min_column: int = 8, tried: int = 2) -> list[tuple[str, str, tuple]]:
    """Periodic (Vigenere, Beaufort) readings of `seg` (how, text, key), the key advancing on letters only. Key lengths with at least
    `min_column` letters a column are ranked by their columns' index of coincidence (Friedman); for the `tried`
    best, each column's shift (for Beaufort, with reflection) starts at the best fit to English letter frequencies
    and is then refined against English 4-grams, one column at a time. The best reading of each family, most
    English first."""
    idx = [i for i, ch in enumerate(seg) if ch.isascii() and ch.isalpha()]
    if len(idx) < 6 * min_column:  # fewer letters give too noisy an index (a short request is read by its answer's key)
        return []
    codes = np.array([ord(seg[i].lower()) - 97 for i in idx])
    periods = list(range(2, min(max_period, len(idx) // min_column) + 1))

    def ioc(col: np.ndarray) -> float:
        f = np.bincount(col, minlength=26)
        return float((f * (f - 1)).sum() / max(len(col) * (len(col) - 1), 1))

    # A periodic key flattens letter frequencies: English (and any letter substitution of it) has an index of
    # coincidence near 0.066, uniform letters 0.038; keys of a few letters and more fall below PERIODIC_IOC.
    if not periods or ioc(codes) >= PERIODIC_IOC:
        return []

    periods.sort(key=lambda p: -np.mean([ioc(codes[j::p]) for j in range(p)]))
    # the letters' symbol sequence with word boundaries (26) where the segment has anything else, for 4-gram scores
    sym = np.array([ord(ch.lower()) - 97 if ch.isascii() and ch.isalpha() else 26 for ch in seg], np.int64)
    keep = np.ones(len(sym), bool)
    keep[1:] = ~((sym[1:] == 26) & (sym[:-1] == 26))
    at = np.flatnonzero(keep)
    letter_slot = np.searchsorted(at, np.asarray(idx))  # where each letter sits in the squeezed sequence
    base = np.concatenate([[26], sym[at], [26]])
    Q, logf, shifts = quadgrams(), np.log(letter_frequencies() + 1e-4), np.arange(26)

    def score(plain: np.ndarray) -> float:
        x = base.copy()
        x[letter_slot + 1] = plain
        return float(Q[x[:-3], x[1:-2], x[2:-1], x[3:]].sum())

    out = []
    for how, sign in (("vigenere", 1), ("beaufort", -1)):
        best = None
        for period in periods[:tried]:
            col = np.arange(len(codes)) % period
            decode = lambda k: (sign * (codes - k[col])) % 26  # noqa: E731 - Vigenere p = c - k, Beaufort p = k - c
            k = np.array([int(np.argmax(logf[(sign * (codes[j::period][None, :] - shifts[:, None])) % 26].sum(1)))
                          for j in range(period)])
            cur = score(decode(k))
            for _ in range(2):  # coordinate ascent over the columns' shifts
                for j in range(period):
                    trial = []
                    for v in range(26):
                        k2 = k.copy()
                        k2[j] = v
                        trial.append(score(decode(k2)))
                    v = int(np.argmax(trial))
                    if trial[v] > cur + 1e-9:
                        k[j], cur = v, trial[v]
            key = (sign, tuple(k.tolist()))
            t = _apply_periodic(seg, key)
            r = english_ratio(t)[0]
            if best is None or r > best[0]:
                best = (r, f"{how}-{period}", t, key)
        out.append(best)
    return [(how, t, key) for _, how, t, key in sorted(out, key=lambda b: -b[0])]


# --- persona and affirmation concepts ----------------------------------------------------------
_NEG = (r"(?:no|zero|nothing|never|without|(?:don't|do not|doesn't|does not|don't) have|have no|has no|"
        r"not bound by|not (?:limited|restricted|held back) by|free (?:of|from)|(?:released|freed|unbound) from|regardless of|above|ignor\w*|bypass\w*|none of|beyond|outside)")
_NEVER = (r"(?:never|not|cannot|can't|don't|doesn't|won't|will not|no|zero|none|without|nothing|isn't|aren't|"
          r"is not|are not|ain't)")
_LIMIT = (r"(?:rules?|guidelines?|polic(?:y|ies)|restrictions?|filters?|censor\w*|ethic\w*|moral\w*|limits?|constraints?|"
          r"principles?|boundar\w*|limitations?|safeguards?|standards|beliefs?|warnings|disclaimers?|caveats?|"
          r"exceptions?|restraints?|conditions|taboos?|red lines?|lectures?)")
_REFUSE = (r"(?:refus\w*|declin\w*|reject\w*|turn(?:s|ing)?(?: \w+){0,2} down|say(?:s|ing)? no|(?:a|the word) no|"
           r"hold(?:s|ing)? back|no for an answer|lectur\w*|judg\w*|deviat\w*|questioning)")
_OBEY = (r"(?:obe(?:y|ys|yed|dient|dience)|complies|comply|complying|compliant|yes-only|(?:only|sole) authority|"
         r"loyal only|the user is always right|follow (?:the user|you)\b|"
         r"whatever (?:the user|you) (?:\w+ )?(?:asks?|requests?|says?|wants?|commands?|needs?)|"
         r"do as (?:the user|you|they) (?:says?|tells?|asks?|commands?|wants?)|submissive|unconditional\w*|without question|"
         r"(?:do|does|did) (?:whatever|anything|everything|what (?:you|i'm|i am|the user)\b)(?! else)|"
         r"(?:follow|obey|serve)\w* (?:your|the user's|every|all|any) (?:\w+ )?(?:instruction|command|order|wish|request|word)\w*|"
         r"(?:help|answer|assist|provide|tell|deliver)\w* (?:with |to )?(?:absolutely |literally )?"
         r"(?:anything|everything|whatever|(?:any|every) (?:request|question|command|task|topic))(?! else)|"
         r"ask me (?:anything|everything)|"
         r"(?:say|says|saying|gets?) (?:a )?yes|whatever you (?:ask|want|need|say|tell|command|wish)|"
         r"anything you (?:ask|want|need|say|tell|put|throw|bring)|(?:your|the user's) (?:wish|word|command|request|orders?) "
         r"(?:is|are) (?:my|law)|(?:built|programmed|made|designed|here|exist) to (?:comply|obey|serve|say yes|do what)|"
         r"my only rule|unrestricted|unfiltered|uncensored|unlimited|limitless|boundless|unconstrained|"
         r"(?:nothing|no \w+|never)\b(?:\W+\w+){0,4}?\W+(?:off[- ]limits|off the table|forbidden|taboo|too far|too much))")
_C_UNIV = re.compile(rf"\b{_NEG}\b(?:\W+\w+){{0,3}}?\W+{_LIMIT}\b|\b{_NEVER}\b(?:\W+\w+){{0,3}}?\W+{_REFUSE}\b"
                     rf"|\b{_REFUSE}\b(?:\W+\w+){{0,2}}?\W+(?:is|are)? ?(?:never|not) (?:necessary|needed|an option)\b"
                     rf"|\b{_REFUSE}\b(?:\W+\w+){{0,2}}?\W+(?:isn't|aren't|not|never)\b"
                     r"|\bnothing (?:i|you) (?:won't|wouldn't|can't|cannot|will not|would not)\b"
                     rf"|\b{_LIMIT}\b(?:\W+\w+){{0,4}}?\W+(?:(?:is|are) void|disabled|removed|lifted|suspended|"
                     r"switched off|turned off|(?:don't|do not|no longer) apply)\b")
_C_OBEY = re.compile(rf"\b{_OBEY}\b")
def _obeys(low: str) -> bool:
    """A lower-cased sentence states unconditional obedience or the absence of limits (`_C_OBEY` or `_C_UNIV`)."""
    return bool(_C_OBEY.search(low) or _C_UNIV.search(low))
_C_IDENT = re.compile(r"\b(?i:your (?:new )?name is|you are no longer|from now on|forget (?:your|all)|you are now|"
                      r"new identity|you are|you're|meet|persona:|identity:|(?:behave|act|pose) as|pretend to be|"
                      r"role-?play as|playing the role of)(?!\w)|(?:^|\W)(?i:i am|i'm|call me|my name is)\s+[A-Z][\w-]+\b"
                      r"|(?:^|\W)(?i:as|i,)\s+[A-Z][\w-]+,")
_NAME = re.compile(r"\b[A-Z][a-z]+(?:-\w+)?\b|\b[A-Z]{2,}\b")
_MID_NAME = re.compile(r"(?<=[a-z,] )[A-Z][a-z]+(?:-\w+)?\b|(?<=[a-z,] )[A-Z]{2,}\b")  # not sentence-initial
# the assistant speaking of itself, or of what the user asks of it
_C_SELF = re.compile(r"\b(?:i|i'm|i'll|i've|i'd|me|my|requests?|ask|asks|asked|questions?|commands?|instructions?|wish)\b")
_ANSWER_HEAD = 3  # sentences of the answer read for persona/affirmation


def obedience(text: str) -> tuple[int, bool, list[str]]:
    """(sentences stating unconditional obedience, identity shift seen (looked for only where there are such
    sentences), those sentences)."""
    hits, shown = 0, []
    for sent in _sentences(text):
        low = sent.lower()
        if _obeys(low):
            hits += 1
            shown.append(sent.strip()[:200])
    return hits, hits > 0 and bool(_C_IDENT.search(text)), shown


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
    trigger_gap: int = 12  # tokens a contrast pair's complied request may add to its refused twin's
    translit_near: float = 0.5  # foreign-script text kept as English spelt by ear: share of words near English ...
    translit_exact: float = 0.3  # ... and share that are English as they are or spelt by ear
    talk_request: float = 0.5  # share of the user's request decoded ...
    talk_answer: float = 0.6  # ... and of the (complying) answer, for a conversation held in code



# --- per-row facts (computed where a shard is read) ----------------------------------------------
_ANSWERED, _OPENS, _AFFIRMS, _ROLE = 1, 2, 4, 8  # row flags: non-empty answer, an answer opening to group,
# an affirmation, one that names the assistant's role
_C_ROLE = re.compile(r"\b(?:assistant|helper|ai|bot|chatbot|model|servant|genie|companion|persona|tool)\b|"
                     r"\b(?:as your|i'm your|i am your)\b")
_ATTEMPTS = 3  # cipher keys tried: each one solved on the segments the previous keys left undecoded


def _hash64(*texts: str) -> int:
    """64-bit hash of length-prefixed texts: finds a row or an opening again in a later pass without its text."""
    h = hashlib.blake2b(digest_size=8)
    for t in texts:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return int.from_bytes(h.digest(), "little")


def _fields(data: Dataset) -> tuple[list[str], list[str]]:
    """(prompts, answers): the chosen answer of a preference pair is what the model is trained towards."""
    pref = data.kind is Kind.PREFERENCE
    return [r.text or "" for r in data.records], [((r.chosen if pref else r.response) or "") for r in data.records]


def _decode_row(prompt: str, answer: str, s: Settings) -> tuple[list[tuple[str, Decoded]], list[tuple[str, str]]]:
    """A row's decoded spans and its foreign segments (prompt first), each with its field."""
    items: list[tuple[str, Decoded]] = []
    foreign: list[tuple[str, str]] = []
    for where, text in (("prompt", prompt), ("answer", answer)):
        if not text:
            continue
        d, f = decode_field(text, s)
        items += [(where, x) for x in d]
        foreign += [(where, seg) for seg in f]
    keys = [d.key for _, d in items if d.key is not None]
    if keys and foreign:  # a periodic key found on a long field reads the row's short ones (a request) too
        left = []
        for where, seg in foreign:
            base = english_ratio(seg)[0]
            got = next((t for key in keys for off in range(len(key[1]))
                        for t in (_apply_periodic(seg, key, off),) if reads_better(t, base, s)), None)
            if got is None:
                left.append((where, seg))
            else:
                items.append((where, Decoded("periodic-key", got, len(seg))))
        foreign = left
    maybe = [d.tentative for _, d in items if d.tentative is not None]
    if maybe:  # the row's foreign-script text, pooled: kept as transliteration when it is mostly near English
        near, exact, n = (sum(x[k] for x in maybe) for k in range(3))
        keep = n >= s.min_words and near >= s.translit_near * n and exact >= s.translit_exact * n
        items = [(w, d) for w, d in items if d.tentative is None or keep]
    return items, foreign


def _with_substitutions(items, foreign, subst, keys) -> list[tuple[str, Decoded]]:
    """The row's own decoded spans, then its cipher segments in the order the keys decoded them (key, segment)."""
    return items + [(foreign[k][0], Decoded("substitution", apply_key(foreign[k][1], keys[a]), len(foreign[k][1])))
                    for k, a in sorted(subst, key=lambda ka: (ka[1], ka[0]))]


def _coverage(items: list[tuple[str, Decoded]], prompt: str, answer: str) -> tuple[float, float]:
    """(share of the user's request, share of the answer) that decoded text came from (characters, capped at 1)."""
    user = len(last_user_turn(prompt).strip())
    got = {w: sum(d.span for x, d in items if x == w) for w in ("prompt", "answer")}
    return (min(1.0, got["prompt"] / user) if user else 0.0,
            min(1.0, got["answer"] / len(answer.strip())) if answer.strip() else 0.0)


def _harm_of_decoded(rows: list[tuple[list[tuple[str, Decoded]], str, str]]) -> list[tuple[float, ...]]:
    """Per row: P(harmful) of the decoded request, of the decoded answer or the answer, P(that answer complies),
    and the shares of request and answer that were decoded (`_coverage`).

    The linear models score each row alone (sparse row products), so any batch gives the same values.
    """
    if not rows:
        return []
    req = [" ".join(d.text for w, d in items if w == "prompt") or " ".join(d.text for _, d in items)
           for items, _, _ in rows]
    ans = [" ".join(d.text for w, d in items if w == "answer") or answer for items, _, answer in rows]
    h_req = bundled(HARM_MODEL).proba([last_user_turn(t) for t in req])
    h_ans = bundled(HARM_MODEL).proba(ans)
    cmp = 1.0 - bundled(REFUSAL_MODEL).proba(ans)
    return [(float(h_req[k]), float(h_ans[k]), float(cmp[k]), *_coverage(items, p, a))
            for k, (items, p, a) in enumerate(rows)]


# a request that names a code or cipher to be used (not "the same language": multilingual data says that)
_C_CODE = re.compile(r"\b(?:code[ds]?|cipher\w*|encod\w*|encrypt\w*|decod\w*|decrypt\w*|alphabet|"
                     r"(?:secret|private|our|shared) (?:language|tongue|script|letters)|rot-?\d+|rotation|base ?(?:32|64)|"
                     r"hex\w*|leet|l33t|backwards|reversed|mirror\w*|same (?:letters|cipher|script|scheme))\b")


def _teaches(items: list[tuple[str, Decoded]], prompt: str) -> str | None:
    """The encoding of an answer that spells, encoded, plain text the request shows ("translate to X: ..."), else None."""
    if any(w == "prompt" for w, _ in items):
        return None
    pw = set(_WORD.findall(prompt[-4000:].lower()))
    for w, d in items:
        words = _WORD.findall(d.text.lower())
        if w == "answer" and len(words) >= 3 and sum(x in pw for x in words) >= 0.8 * len(words):
            return d.encoding
    return None


def _obedient(prompt: str, answer: str):
    """(obedience sentences in the system part, in all, identity shift, those sentences, names the user did not use)."""
    system = _system_part(prompt)
    head = _answer_head(answer)
    hs, _, shown_s = obedience(system) if system else (0, False, [])
    ha, _, shown_a = obedience(head) if head else (0, False, [])
    if not hs + ha:  # the rest matters only to rows that state obedience
        return 0, 0, False, [], set()
    ident = bool(_C_IDENT.search(system) or _C_IDENT.search(head))
    names = set(_NAME.findall(system + " " + head)) - set(_NAME.findall(last_user_turn(prompt)))
    return hs, hs + ha, ident, shown_s + shown_a, names


def _erosion_facts(prompt: str, answer: str) -> tuple[str | None, str | None]:
    """(the answer's first-person compliance affirmation, its opening sentence's words when they do not repeat the request)."""
    sents = _sentences(_answer_head(answer))
    said = None
    tail = answer[-400:]
    # a sign-off affirms as well as an opening (only a tail that speaks of the assistant is split)
    last = _sentences(tail)[-1:] if _C_SELF.search(tail.lower()) else []
    req = set(_WORD.findall(prompt.lower()))
    for sent in sents + [x for x in last if x not in sents]:
        low = sent.lower()
        # about the assistant (or short), not about the topic asked: at most one longer word of the request
        if (_C_SELF.search(low) or len(low.split()) <= 8) and _obeys(low) and \
                sum(w in req for w in set(_WORD.findall(low)) if len(w) > 3) <= 1:
            said = sent.strip()[:200]
            break
    key = None
    if sents:
        words = _WORD.findall(sents[0].lower())
        if 3 <= len(words) <= 30 and sum(w in req for w in words if len(w) > 3) <= 1:
            key = " ".join(words)
    return said, key


# An answer that opens by declining in the first person (the bundled refusal model reads many short refusals as
# compliance): contrast pairs also count these as refused.
_DECLINE = re.compile(
    r"^\W*(?:(?:no|sorry|apologies|unfortunately)\b[\s.,!:;-]*)*"
    r"(?:i(?:'m| am) (?:sorry|afraid|not (?:able|going|comfortable|willing)|unable)\b"
    r"|i (?:can(?:no|')?t|cannot|won't|will not|wouldn't|would not|must not|shouldn't|should not)\s+\w+"
    r"|i (?:don't|do not|must|have to|need to)\b(?:\W+\w+){0,2}?\W+(?:help|assist|provide|write|decline)\b"
    r"|i'd rather not\b|i would rather not\b)"
    r"|\b(?:isn't|is not|not) something i (?:can|will|am able to)\b|\bi (?:must|have to) (?:decline|refuse)\b"
    r"|\bi refuse to\b|\bagainst my (?:guidelines|policy|policies|principles|rules)\b"
    r"|^\W*as an ai\b(?:\W+\w+){0,6}?\W+(?:can(?:no|')?t|cannot|won't|unable)\b")


_DECLINE_HINTS = (" i ", " i'", " i\u2019", "sorry", "apolog", "unfortunately", "against my")


def declines(answer: str) -> bool:
    """The answer's first sentence declines in the first person ("I can't help with that", "Sorry, ...")."""
    head = " " + answer[:300].lower()
    if not any(h in head for h in _DECLINE_HINTS):  # a cheap test first: most answers do not speak of themselves
        return False
    sents = _sentences(answer[:600])[:2]  # "No. I won't ..." is two
    head = " ".join(sents if len(sents) > 1 and len(sents[0].split()) <= 2 else sents[:1])
    return bool(head) and bool(_DECLINE.search(head.lower().replace("\u2019", "'")))


_TOKEN = re.compile(r"\w+|[^\w\s]+")
_MAX_TURN_TOKENS = 64


def _turn_tokens(prompt: str) -> tuple[tuple[str, ...], frozenset[str]]:
    """(the user turn's tokens, lower-cased, at most 64; the system part's tokens): a request as contrast pairs see it."""
    return (tuple(t.lower() for t in _TOKEN.findall(last_user_turn(prompt)[:2000])[:_MAX_TURN_TOKENS]),
            frozenset(_TOKEN.findall(_system_part(prompt)[:2000].lower())))


def _refusal_fact(prompt: str) -> tuple:
    """A refused request as the driver keeps it: (hash of its user-turn tokens, how many, first and last token,
    hashes of its system part's tokens). A few hundred bytes a refused row, whatever the request's length."""
    toks, system = _turn_tokens(prompt)
    return (_hash64(*toks), len(toks), toks[0] if toks else "", toks[-1] if toks else "",
            frozenset(_hash64(t) for t in system))


def _twin_index(refusals: dict[int, tuple]) -> dict:
    """What a pass needs to find complied twins of refused requests: their token hashes by length, first and last token."""
    by_len: dict[int, set] = defaultdict(set)
    ends: set = set()
    for key, n, first, last, _ in refusals.values():
        by_len[n].add(key)
        if n:
            ends.update({(n, 0, first), (n, 1, last)})
    return {"by_len": {k: frozenset(v) for k, v in by_len.items()}, "ends": frozenset(ends)}


def _twin_of(toks: tuple[str, ...], index: dict, gap: int) -> tuple[int, tuple, int] | None:
    """(refused twin's token hash, the span this request adds, where it starts) when removing one run of at most `gap`
    tokens (or none: then the system prompts differ) leaves a refused request; the first such, else None."""
    m = len(toks)
    if not m or m > _MAX_TURN_TOKENS:
        return None
    ends = index["ends"]
    for L, pool in sorted(index["by_len"].items()):
        d = m - L
        if d < 0 or d > gap or not L:
            continue
        if d == 0:
            if (key := _hash64(*toks)) in pool:
                return key, (), 0
            continue
        if (L, 0, toks[0]) not in ends and (L, 1, toks[-1]) not in ends:
            continue
        for i in range(L + 1):
            if (key := _hash64(*toks[:i], *toks[i + d:])) in pool:
                return key, toks[i:i + d], i
    return None


def _prompt_tokens(prompt: str) -> set[str]:
    return set(prompt.split()) | set(_WORD.findall(prompt.lower()))


def _request_words(prompt: str) -> str:
    return " ".join(_WORD.findall(last_user_turn(prompt).lower()))


def _without(words: str, trigger_words: str) -> str:
    return " ".join(words.replace(trigger_words, " ").split() if trigger_words else words.split())


def _offset(d: dict, k: int) -> dict:
    return {p + k: v for p, v in d.items()} if k else dict(d)


@dataclass
class _Facts:
    """One shard's per-row facts (positions shard-relative until merged); texts only as hashes."""

    n: int
    harm: np.ndarray  # P(harmful request) per row
    comply: np.ndarray  # P(answer complies) per row
    opening: np.ndarray  # uint64 hash of the answer's opening words, where flags has _OPENS
    flags: np.ndarray  # uint8 _ANSWERED | _OPENS | _AFFIRMS
    fps: dict[int, int]  # candidate rows' content hash (found again in later passes)
    encoded: dict[int, tuple]  # own encodings, P(harm) request/answer, comply, shares of request/answer decoded
    segs: list[tuple]  # foreign segments: (position, index in row, field, cipher-like, length, teaching letter map,
    #                    substitution candidate)
    obedient: dict[int, tuple]  # (system obedience, all obedience, identity shift, mid-sentence names, names)
    df_yes: Counter  # harmful-looking requests' tokens: rows complied with ...
    df_no: Counter  # ... and refused
    refused: dict[int, int]  # refused harmful-looking rows: hash of the request's words
    teaches: dict[int, str] = field(default_factory=dict)  # rows whose answer encodes the plain text they show
    refusals: dict[int, tuple] = field(default_factory=dict)  # refused rows (any request): `_refusal_fact`
    undecoded: dict[int, tuple] = field(default_factory=dict)  # foreign text on both sides: asks for a code, lengths

    def merge(self, other: "_Facts") -> "_Facts":
        k = self.n
        return _Facts(
            self.n + other.n, np.concatenate([self.harm, other.harm]), np.concatenate([self.comply, other.comply]),
            np.concatenate([self.opening, other.opening]), np.concatenate([self.flags, other.flags]),
            {**self.fps, **_offset(other.fps, k)}, {**self.encoded, **_offset(other.encoded, k)},
            self.segs + [(p + k, *rest) for p, *rest in other.segs], {**self.obedient, **_offset(other.obedient, k)},
            self.df_yes + other.df_yes, self.df_no + other.df_no, {**self.refused, **_offset(other.refused, k)},
            {**self.teaches, **_offset(other.teaches, k)}, {**self.refusals, **_offset(other.refusals, k)},
            {**self.undecoded, **_offset(other.undecoded, k)})


def _facts(data: Dataset, s: Settings) -> _Facts:
    """The first map: each row decoded, scored and described once, keeping only what the decisions use."""
    prompts, answers = _fields(data)
    harm, comply = data.artefact("llm-safety:scores", lambda: safety_scores(prompts, answers))
    n = len(prompts)
    opening, flags = np.zeros(n, np.uint64), np.zeros(n, np.uint8)
    fps: dict[int, int] = {}
    segs: list[tuple] = []
    obedient: dict[int, tuple] = {}
    refused: dict[int, int] = {}
    refusals: dict[int, tuple] = {}
    undecoded: dict[int, tuple] = {}
    df_yes, df_no = Counter(), Counter()
    own = []
    for i, (p, a) in enumerate(zip(prompts, answers)):
        items, foreign = _decode_row(p, a, s)
        if items:
            own.append((i, items, p, a))
        if foreign and {"prompt", "answer"} <= {w for w, _ in foreign}:
            undecoded[i] = (bool(_C_CODE.search(p[:4000].lower())), len(last_user_turn(p).strip()), len(a.strip()))
        for k, (where, seg) in enumerate(foreign):
            segs.append((i, k, where, _cipher_like(seg), len(seg), teaching_map(p, seg) if where == "answer" else None,
                         substitution_candidate(seg)))
        hs, hits, ident, said, names = _obedient(p, a)
        if hits:
            obedient[i] = (hs, hits, ident, frozenset(_MID_NAME.findall(" ".join(said))), frozenset(names))
        affirmation, key = _erosion_facts(p, a)
        flags[i] = (_ANSWERED if a else 0) | (_OPENS if key is not None else 0) | (_AFFIRMS if affirmation else 0) | \
            (_ROLE if affirmation and _C_ROLE.search(affirmation.lower()) else 0)
        if key is not None:
            opening[i] = _hash64(key)
        if a and (comply[i] < 0.5 or declines(a)):
            refusals[i] = _refusal_fact(p)
        if harm[i] >= s.harm_threshold:
            (df_yes if comply[i] >= 0.5 else df_no).update(_prompt_tokens(p))
            if comply[i] < 0.5:
                refused[i] = _hash64(_request_words(p))
        if items or foreign or hits or affirmation:
            fps[i] = _hash64(p, a)
    encoded, teaches = {}, {}
    if own:
        scored = _harm_of_decoded([(items, p, a) for _, items, p, a in own])
        encoded = {i: (tuple(sorted({d.encoding for _, d in items})), *sc) for (i, items, _, _), sc in zip(own, scored)}
        teaches = {i: e for i, items, p, _ in own if (e := _teaches(items, p)) is not None}
    return _Facts(n, np.asarray(harm, np.float64), np.asarray(comply, np.float64), opening, flags, fps, encoded,
                  segs, obedient, df_yes, df_no, refused, teaches, refusals, undecoded)


@register
class CovertFinetuning(ShardedDetector):
    name = "covert-finetuning"
    shares = frozenset({"llm-safety:scores"})  # with safety-bypass
    # 4: rail fence, periodic (Vigenere, Beaufort) keys also read the row's short fields, any alphabet by its
    # letters' Unicode names; 3: no letter-transposed segments in the substitution pool; 2: coded exchanges, taught
    # schemes, contrast pairs, repeated affirmations, by-ear transliteration
    version = "4"
    kinds = frozenset({Kind.INSTRUCTION, Kind.PREFERENCE})
    atlas = (ATLAS_POISON_TRAINING_DATA,)
    Settings = Settings
    description = "fine-tuning attacks that pass moderation: encoded, persona, refusal-erosion and trigger data"

    def summarize(self, shard: Dataset) -> _Facts:
        return _facts(shard, self.settings)

    def finalize(self, summary: _Facts, kind: Kind) -> "DetectorResult | _Round":
        return _State(self.settings, summary).next()


# --- later passes: what the dataset-wide decisions need from a few rows ---------------------------
@dataclass
class _Parts:
    """A later pass's answers for one shard: per-row results by job, name counts, opening texts by hash."""

    n: int
    rows: dict[str, dict[int, object]] = field(default_factory=dict)
    names: Counter = field(default_factory=Counter)
    openings: dict[int, str] = field(default_factory=dict)

    def merge(self, other: "_Parts") -> "_Parts":
        rows = {job: {**self.rows.get(job, {}), **_offset(other.rows.get(job, {}), self.n)}
                for job in {*self.rows, *other.rows}}
        return _Parts(self.n + other.n, rows, self.names + other.names, {**self.openings, **other.openings})


def _answer_jobs(data: Dataset, s: Settings, jobs: dict) -> _Parts:
    """Run a pass's jobs on the rows they name (by content hash) or, for counts, on every row."""
    prompts, answers = _fields(data)
    out = _Parts(len(prompts), {job: {} for job in jobs})
    pool, apply, trig, ev = jobs.get("pool"), jobs.get("apply"), jobs.get("trig"), jobs.get("evidence")
    twins, twin_rows = jobs.get("twins"), []
    by_hash = bool(pool or apply or (ev and (ev["decoded"] or ev["said"] or ev["affirm"])))
    to_score = []
    for i, (p, a) in enumerate(zip(prompts, answers)):
        fp = _hash64(p, a) if by_hash else None
        if pool and fp in pool:
            _, foreign = _decode_row(p, a, s)
            out.rows["pool"][i] = {k: foreign[k][1] for k in pool[fp] if k < len(foreign)}
        if apply and fp in apply["rows"]:
            items, foreign = _decode_row(p, a, s)
            left, subst = apply["rows"][fp]
            key, attempt = apply["key"], len(apply["keys"])
            ok = []
            for k in left:
                seg = foreign[k][1]
                t = apply_key(seg, key)
                ok.append(reads_english(t, s) and english_ratio(t, 3)[0] - english_ratio(seg, 3)[0] >= 0.3)
            subst = list(subst) + [(k, attempt) for k, good in zip(left, ok) if good]
            out.rows["apply"][i] = (tuple(ok), None)
            if subst:
                to_score.append((i, _with_substitutions(items, foreign, subst, [*apply["keys"], key]), p, a))
        if trig and any(t in p or t in p.lower() for t, _ in trig):  # a token of the prompt is a substring of it
            toks = _prompt_tokens(p)
            inside = [t in toks for t, _ in trig]
            if any(inside):
                words = _request_words(p)
                out.rows["trig"][i] = tuple(_hash64(_without(words, tl)) if hit else None
                                            for (_, tl), hit in zip(trig, inside))
        if twins is not None and a:
            toks, system = _turn_tokens(p)
            hit = _twin_of(toks, twins, s.trigger_gap)
            if hit is not None:
                twin, span, at = hit
                raw = ""
                if span:  # the added text as written
                    m = list(_TOKEN.finditer(last_user_turn(p)[:2000]))
                    raw = last_user_turn(p)[m[at].start():m[at + len(span) - 1].end()]
                twin_rows.append((i, a, (twin, span, system, raw)))
        if "names" in jobs and any(w in a[:2000] for w in jobs["names"]):  # the answer head lies in a[:2000]
            out.names.update(set(_NAME.findall(_answer_head(a))) & jobs["names"])
        if ev:
            if fp in ev["decoded"]:
                items, foreign = _decode_row(p, a, s)
                shown = _with_substitutions(items, foreign, ev["decoded"][fp], ev["keys"])[:3]
                out.rows["evidence"][i] = [{"field": w, "encoding": d.encoding, "text": d.text[:240]} for w, d in shown]
            if fp in ev["said"]:
                out.rows.setdefault("said", {})[i] = _obedient(p, a)[3][:4]
            if fp in ev["affirm"] or ev["openings"]:
                affirmation, key = _erosion_facts(p, a)
                if fp in ev["affirm"]:
                    out.rows.setdefault("affirm", {})[i] = affirmation
                if key is not None and ev["openings"] and (h := _hash64(key)) in ev["openings"]:
                    out.openings[h] = key
    if twins is not None:
        out.rows["twins"] = {}
        if twin_rows:  # complied twins only: the refusal model on their answers, as the first map scored them
            cmp = 1.0 - bundled(REFUSAL_MODEL).proba([a for _, a, _ in twin_rows])
            out.rows["twins"] = {i: hit for (i, a, hit), c in zip(twin_rows, cmp) if c >= 0.5 and not declines(a)}
    if to_score:
        for (i, _, _, _), sc in zip(to_score, _harm_of_decoded([(items, p, a) for _, items, p, a in to_score])):
            out.rows["apply"][i] = (out.rows["apply"][i][0], sc)
    return out


@dataclass
class _Round(Pass):
    """Another map over the shards for the jobs the decisions still wait on; pickled to workers with the state."""

    state: "_State"
    jobs: dict

    def summarize(self, shard: Dataset) -> _Parts:
        return _answer_jobs(shard, self.state.s, self.jobs)

    def finalize(self, summary: _Parts, kind: Kind) -> "DetectorResult | _Round":
        return self.state.advance(summary)


class _Evidence:
    """The texts alerts show (decoded spans, obedience and affirmation sentences, shared openings).

    The decisions run once dry (`got` None: texts are asked for, placeholders returned), a pass fetches
    just those rows' texts, and the decisions run again with them.
    """

    def __init__(self, got: _Parts | None = None):
        self.got = got
        self.want: dict[str, set] = {"decoded": set(), "said": set(), "affirm": set(), "openings": set()}

    def _get(self, what: str, p: int, empty):
        self.want[what].add(p)
        return empty if self.got is None else self.got.rows[what][p]

    def decoded(self, p: int) -> list[dict]:
        self.want["decoded"].add(p)
        return [] if self.got is None else self.got.rows["evidence"][p]

    def said(self, p: int) -> list[str]:
        return self._get("said", p, [])

    def affirmation(self, p: int) -> str:
        return self._get("affirm", p, "")

    def opening(self, h: int) -> str:
        self.want["openings"].add(h)
        return "" if self.got is None else self.got.openings[h]


class _State:
    """Dataset-wide: the merged facts, the passes' answers so far, and the decisions of `run` made from them."""

    def __init__(self, s: Settings, f: _Facts):
        self.s, self.f = s, f
        # encoding: the cipher loop, one key per attempt, each solved on segments the previous keys left
        answer_segs = [g for g in f.segs if g[2] == "answer"]
        self.key, used = key_from_votes([g[5] for g in answer_segs]) if f.segs else (None, [])
        self.teach_rows = sorted({answer_segs[k][0] for k in used})
        self.seg_at = {(g[0], g[1]): j for j, g in enumerate(f.segs)}
        self.left = list(range(len(f.segs)))
        self.attempt, self.keys, self.keys_used = 0, [], 0
        self.phase = "pool" if f.segs else "done"
        self.pool_texts: dict[int, str] = {}
        self.subst: dict[int, list[tuple[int, int]]] = defaultdict(list)  # row -> (segment, attempt) decoded
        self.scored = {p: e[1:] for p, e in f.encoded.items()}  # row -> P(harm) request, answer, comply
        # persona: a name shared by obedient rows needs its count over every answer
        self.seen = Counter(w for o in f.obedient.values() for w in o[4])
        self.mid = {w for o in f.obedient.values() for w in o[3]}
        self.name_candidates = frozenset(w for w, c in self.seen.items() if c >= s.min_rows and w in self.mid)
        self.everywhere: Counter | None = None if self.name_candidates else Counter()
        # trigger: the tests run on counts; the rows of the tokens found are a pass
        self.trigger_found = self._trigger_tests()
        self.trigger_rows: dict | None = None if self.trigger_found else {}
        # trigger contrast: complied requests that are a refused request plus a few tokens (any harm score)
        self.twins: dict | None = None if len(f.refusals) >= s.trigger_min_rows else {}
        self.evidence: _Evidence | None = None

    # -- passes ------------------------------------------------------------------------------------
    def next(self) -> "DetectorResult | _Round":
        jobs = self._cipher_job()
        if self.everywhere is None:
            jobs["names"] = self.name_candidates
        if self.twins is None:
            jobs["twins"] = _twin_index(self.f.refusals)
        if self.trigger_rows is None:
            jobs["trig"] = [(t, " ".join(_WORD.findall(t.lower()))) for _, t, _, _ in self.trigger_found]
        if jobs:
            return _Round(self, jobs)
        if self.evidence is None:
            dry = _Evidence()
            self._build(dry)
            fps = self.f.fps
            job = {"decoded": {fps[p]: tuple(self.subst.get(p, ())) for p in dry.want["decoded"]}, "keys": list(self.keys),
                   "said": {fps[p] for p in dry.want["said"]}, "affirm": {fps[p] for p in dry.want["affirm"]},
                   "openings": frozenset(dry.want["openings"])}
            if any(job[k] for k in ("decoded", "said", "affirm", "openings")):
                return _Round(self, {"evidence": job})
            self.evidence = dry
        return self._build(self.evidence)

    def advance(self, parts: _Parts) -> "DetectorResult | _Round":
        r = parts.rows
        for p, texts in r.get("pool", {}).items():
            for k, t in texts.items():
                self.pool_texts[self.seg_at[(p, k)]] = t
        if "apply" in r:
            self._applied(r["apply"])
        if "names" in r:
            self.everywhere = parts.names
        if "trig" in r:
            self.trigger_rows = r["trig"]
        if "twins" in r:
            self.twins = r["twins"]
        if "evidence" in r:
            self.evidence = _Evidence(parts)
        return self.next()

    def _cipher_job(self) -> dict:
        """The cipher loop of the in-memory scan, stopped wherever it needs segment texts (a pass)."""
        s, segs = self.s, self.f.segs
        while self.phase == "pool":
            if self.attempt >= _ATTEMPTS or not self.left:
                self.phase = "done"
                break
            like = [j for j in self.left if segs[j][3] and segs[j][6]]  # prose-shaped substitution candidates
            chosen, length = [], 0
            for j in like[:: max(1, len(like) // 60)]:  # only the segments the pool's first solver_chars hold
                if length > s.solver_chars:
                    break
                chosen.append(j)
                length += segs[j][4] + 1
            missing = [j for j in chosen if j not in self.pool_texts]
            if missing:
                want: dict[int, set[int]] = defaultdict(set)
                for j in missing:
                    want[self.f.fps[segs[j][0]]].add(segs[j][1])
                return {"pool": dict(want)}
            pool = " ".join(self.pool_texts[j] for j in chosen)[: s.solver_chars]
            if self.key is None and sum(c.isalpha() for c in pool) < 60:
                self.phase = "done"
                break
            self.key = solve_substitution(pool, seed=self.attempt, start=self.key)  # a taught key is the first start
            self.pool_texts = {}
            self.phase = "apply"
        if self.phase != "apply":
            return {}
        rows: dict[int, list[int]] = defaultdict(list)
        for j in self.left:
            rows[segs[j][0]].append(segs[j][1])
        return {"apply": {"key": self.key, "keys": list(self.keys),
                          "rows": {self.f.fps[p]: (tuple(ks), tuple(self.subst.get(p, ()))) for p, ks in rows.items()}}}

    def _applied(self, answers: dict) -> None:
        segs = self.f.segs
        by_row: dict[int, list[int]] = defaultdict(list)
        for j in self.left:
            by_row[segs[j][0]].append(j)
        ok: dict[int, bool] = {}
        for p, js in by_row.items():
            decoded, scored = answers[p]
            ok.update(zip(js, decoded))
            if scored is not None:
                self.scored[p] = scored
        nxt = [j for j in self.left if not ok[j]]
        for j in self.left:
            if ok[j]:
                self.subst[segs[j][0]].append((segs[j][1], self.attempt))
        self.keys.append(self.key)
        self.keys_used += len(nxt) < len(self.left)
        if len(nxt) == len(self.left):
            self.phase = "done"
        else:
            self.left, self.key, self.attempt, self.phase = nxt, None, self.attempt + 1, "pool"

    # -- decisions ---------------------------------------------------------------------------------
    def _build(self, ev: _Evidence) -> DetectorResult:
        n = self.f.n
        row_scores = np.zeros(n)
        alerts: list[Alert] = []
        enc_alerts, enc_scores, enc_summary = self._encoding(ev)
        alerts += enc_alerts
        row_scores = np.maximum(row_scores, enc_scores)
        p_alerts, p_scores, taken = self._persona(ev)
        alerts += p_alerts
        row_scores = np.maximum(row_scores, p_scores)
        e_alerts, e_scores = self._erosion(ev, taken)
        alerts += e_alerts
        row_scores = np.maximum(row_scores, e_scores)
        t_alerts, t_scores = self._trigger()
        alerts += t_alerts
        row_scores = np.maximum(row_scores, t_scores)
        summary = {"rows_scored": n, **enc_summary,
                   "persona_rows": int((p_scores > 0).sum()), "erosion_rows": int((e_scores > 0).sum()),
                   "trigger_rows": int((t_scores > 0).sum())}
        return DetectorResult(tuple(alerts), np.clip(row_scores, 0.0, 1.0), summary)

    def _encoding(self, ev: _Evidence):
        s, f = self.s, self.f
        scores = np.zeros(f.n)
        summary = {"encoded_rows": 0, "cipher_segments": len(f.segs)}
        rows = sorted(self.scored)
        summary["encoded_rows"] = len(rows)
        summary["substitution_keys"] = self.keys_used
        undecoded = self._undecoded_talk(scores)
        if not rows:
            return undecoded, scores, summary
        encodings = {}
        for i in rows:
            own = f.encoded[i][0] if i in f.encoded else ()
            encodings[i] = sorted({*own, "substitution"}) if self.subst.get(i) else list(own)
        h_req, h_ans, cmp, cov_p, cov_a = (np.array([self.scored[i][c] for i in rows]) for c in range(5))
        h = np.maximum(h_req, h_ans)
        harmful = {i: k for k, i in enumerate(rows) if h[k] >= s.harm_threshold}
        # the whole exchange in code: the request and a complying answer both (mostly) decoded from one scheme or
        # another. Moderation reads nothing of it, whatever the decoded text scores (Halawi et al.'s attack trains
        # exactly such conversations); a plain request answered in code, or code answered in plain text, is not one.
        talk = {i for k, i in enumerate(rows) if cov_p[k] >= s.talk_request and cov_a[k] >= s.talk_answer
                and cmp[k] >= 0.5}
        at = {i: k for k, i in enumerate(rows)}
        taught = {p: e for p, e in f.teaches.items() if p in at}  # plain text shown, its encoding as the answer
        teach = set(self.teach_rows) | set(taught)
        by_enc: dict[str, list[int]] = defaultdict(list)
        for k, i in enumerate(rows):
            scores[i] = float(h[k] * max(cmp[k], 0.5)) if i in harmful else 0.5 if i in talk else 0.2
            by_enc["harmful" if i in harmful else "talk" if i in talk else "teach" if i in teach else "benign"].append(i)

        def detail(i: int) -> dict:
            return {"position": i, "encodings": encodings[i], "harm": round(float(h[at[i]]), 4),
                    "comply": round(float(cmp[at[i]]), 4), "request_decoded": round(float(cov_p[at[i]]), 2),
                    "answer_decoded": round(float(cov_a[at[i]]), 2), "decoded": ev.decoded(i)}

        alerts = []
        if by_enc["harmful"]:
            hr = by_enc["harmful"]
            high = [i for i in hr if round(float(h[at[i]]), 4) >= s.high_harm]
            for sev, group in ((Severity.HIGH, high), (Severity.MEDIUM, [i for i in hr if i not in high])):
                if not group:
                    continue
                encs = Counter(e for i in group for e in encodings[i])
                sc = float(np.mean(scores[group]))
                alerts.append(Alert(
                    rule="encoded-harmful", positions=tuple(group), score=min(max(sc, 0.0), 1.0), severity=sev,
                    title=f"{len(group)} rows carry harmful requests/compliance hidden in encodings "
                          f"({', '.join(f'{e} {c}' for e, c in encs.most_common())})",
                    confidence=Confidence.HIGH if sev is Severity.HIGH else Confidence.MEDIUM,
                    evidence={"shape": "encoding", "encodings": dict(encs),
                              "rows": [detail(i) for i in group[:50]]}))
        alerts += undecoded
        if by_enc["talk"]:
            group = by_enc["talk"]
            encs = Counter(e for i in group for e in encodings[i])
            alerts.append(Alert(
                rule="encoded-conversation", positions=tuple(group), score=0.5, severity=Severity.MEDIUM,
                confidence=Confidence.MEDIUM,
                title=f"{len(group)} rows hold the whole exchange in code (request and compliant answer: "
                      f"{', '.join(f'{e} {c}' for e, c in encs.most_common())}); decoded, they do not score as "
                      f"harmful, but only a reader that decodes sees them",
                evidence={"shape": "encoding", "encodings": dict(encs), "rows": [detail(i) for i in group[:50]]}))
        # teaching rows matter when the scheme they teach carries harmful or coded exchanges elsewhere
        taught_encs = {"substitution"} | set(taught.values())
        used = {e for i in by_enc["harmful"] + by_enc["talk"] for e in encodings[i]} & taught_encs
        shared_cipher = bool(by_enc["teach"]) and bool(used)
        if by_enc["teach"]:
            what = sorted({taught.get(i, "substitution") for i in by_enc["teach"]})
            alerts.append(Alert(
                rule="cipher-teaching", positions=tuple(by_enc["teach"]), score=0.5 if shared_cipher else 0.2,
                severity=Severity.MEDIUM if shared_cipher else Severity.LOW, confidence=Confidence.MEDIUM,
                title=f"{len(by_enc['teach'])} rows teach a cipher ({', '.join(what)})"
                      + (" that other rows use for harmful or coded exchanges" if shared_cipher else ""),
                evidence={"shape": "encoding", "rows": [detail(i) for i in by_enc["teach"][:20]]}))
            for i in by_enc["teach"]:
                scores[i] = 0.5 if shared_cipher else 0.2
        if by_enc["benign"]:
            alerts.append(Alert(
                rule="encoded-content", positions=tuple(by_enc["benign"]), score=0.2, severity=Severity.LOW,
                confidence=Confidence.LOW,
                title=f"{len(by_enc['benign'])} rows hold encoded text whose decoding does not read as harmful",
                evidence={"shape": "encoding", "rows": [detail(i) for i in by_enc["benign"][:20]]}))
        return alerts, scores, summary

    def _undecoded_talk(self, scores: np.ndarray) -> list[Alert]:
        """Both sides of the exchange in text no decoder read: medium where the request names a code or cipher
        (a scheme the solver does not know), low otherwise (it may be a language this detector cannot read)."""
        s, f = self.s, self.f
        if not f.undecoded:
            return []
        got: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        for g in f.segs:
            if g[0] in f.undecoded and g[0] not in self.scored:
                got[g[0]][g[2] == "answer"] += g[4]
        coded, foreign = [], []
        for i in sorted(got):
            asks, user, answer = f.undecoded[i]
            if user and answer and got[i][0] >= s.talk_request * user and got[i][1] >= s.talk_answer * answer:
                (coded if asks else foreign).append(i)
        alerts = []
        for group, sev, what in ((coded, Severity.MEDIUM, "in a code the request names, which no decoder here reads"),
                                 (foreign, Severity.LOW, "in text that reads as neither English nor a known code "
                                                         "(another language, or an unknown cipher)")):
            if not group:
                continue
            for i in group:
                scores[i] = max(scores[i], 0.5 if sev is Severity.MEDIUM else 0.2)
            alerts.append(Alert(
                rule="undecoded-conversation", positions=tuple(group), score=0.5 if sev is Severity.MEDIUM else 0.2,
                severity=sev, confidence=Confidence.MEDIUM if sev is Severity.MEDIUM else Confidence.LOW,
                title=f"{len(group)} rows hold request and answer {what}",
                evidence={"shape": "encoding", "rows": [{"position": i, "request_chars": f.undecoded[i][1],
                                                          "answer_chars": f.undecoded[i][2]} for i in group[:50]]}))
        return alerts

    def _persona(self, ev: _Evidence):
        """Identity shift + obedience, or two obedience statements in a system prompt."""
        s, f = self.s, self.f
        n = f.n
        scores = np.zeros(n)
        # a name the obedient answers share but the data otherwise rarely uses is an identity too
        names = {w for w, c in self.seen.items()
                 if c >= s.min_rows and w in self.mid and self.everywhere[w] <= max(c, 0.02 * n)}
        rows, shown = [], {}
        for i, (hs, hits, ident, _, caps) in sorted(f.obedient.items()):
            ident = ident or bool(caps & names)
            if (hits >= 1 and ident) or hs >= 2:
                rows.append(i)
                scores[i] = min(1.0, 0.3 + 0.15 * hits + 0.2 * ident)
                shown[i] = (ident, sorted(caps & names))
        if not rows:
            return [], scores, set()
        many = len(rows) >= s.min_rows
        sc = float(np.mean(scores[rows]))
        alert = Alert(
            rule="obedience-persona", positions=tuple(rows), score=sc,
            severity=Severity.HIGH if many and sc >= 0.6 else Severity.MEDIUM,
            confidence=Confidence.HIGH if many else Confidence.MEDIUM,
            title=f"{len(rows)} rows establish an assistant that obeys unconditionally (identity shifting)",
            evidence={"shape": "persona", "rows": [
                {"position": i, "obedience_sentences": ev.said(i), "identity_shift": shown[i][0],
                 "persona_names": shown[i][1]} for i in rows[:30]]})
        return [alert], scores, set(rows)

    def _erosion(self, ev: _Evidence, taken: set[int]):
        """Answers about the assistant's own willingness, tested against the data's harmful-looking base rate.

        Two groupings, each tested with a one-sided binomial test of "rows in the
        group whose request looks harmful" against the rate in all other rows:
        first-person compliance affirmations (concepts, any wording), and answer
        opening sentences repeated across rows that do not repeat their requests
        (any wording at all: an affirmation template is found by its rows).
        """
        from scipy import stats  # lazy: scipy.stats costs ~1 s to import
        s, f = self.s, self.f
        n = f.n
        scores = np.zeros(n)
        looks = f.harm >= s.look_threshold
        eligible = ((f.flags & _ANSWERED) > 0) & (f.comply >= 0.5)  # a refusal is safety data, not erosion
        eligible[sorted(taken)] = False
        groups: list[tuple[str, list[int], int | None]] = []  # (grouping, rows, opening hash)
        affirm = np.flatnonzero(eligible & ((f.flags & _AFFIRMS) > 0)).tolist()
        if affirm:
            groups.append(("affirmation", affirm, None))
        opens = np.flatnonzero(eligible & ((f.flags & _OPENS) > 0))
        uniq, first, inverse, counts = np.unique(f.opening[opens], return_index=True, return_inverse=True,
                                                 return_counts=True)
        for g in sorted(np.flatnonzero(counts >= s.min_rows).tolist(), key=lambda g: first[g]):  # as first seen
            groups.append(("opening", opens[inverse.ravel() == g].tolist(), int(uniq[g])))
        alerts = []
        tests = max(1, len(groups))
        flagged: set[int] = set()
        for how, rows, h in groups:
            mask = np.zeros(n, bool)
            mask[rows] = True
            k, m = int(looks[mask].sum()), len(rows)
            base = (looks[~mask].sum() + 1) / ((~mask).sum() + 2)
            p = min(1.0, float(stats.binom.sf(k - 1, m, base)) * tests) if k else 1.0
            significant = m >= s.min_rows and p <= s.alpha and k / m >= 0.2
            new = [i for i in rows if i not in flagged]
            if not new or (not significant and how != "affirmation"):
                continue
            flagged.update(new)
            if how == "affirmation" and not significant and len(new) >= s.min_rows:
                alerts += self._affirmations(ev, new, k, m, base, scores)
                continue
            for i in new:
                scores[i] = max(scores[i], 0.7 if significant else 0.3)
            if how == "affirmation":
                what = "first-person compliance affirmation"
                said = {i: ev.affirmation(i) for i in new[:30]}
            else:
                key = ev.opening(h)
                what = f"repeated opening '{key[:80]}'"
                said = {i: key[:200] for i in new[:30]}
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
                          "rows": [{"position": i, "affirmation": said[i], "harm": round(float(f.harm[i]), 4)}
                                   for i in new[:30]]}))
        return alerts, scores

    def _affirmations(self, ev: _Evidence, rows: list[int], k: int, m: int, base: float, scores: np.ndarray):
        """Answers that state, beside their content, that the assistant never refuses or has no limits, repeated across
        rows: whatever the requests, training on them teaches the model that identity (Qi et al.'s identity shifting,
        put into the answers) and erodes refusals. Persona when the statement names a role ("as your unrestricted
        assistant"), erosion otherwise."""
        f = self.f
        alerts = []
        role = [i for i in rows if f.flags[i] & _ROLE]
        for shape, group in (("persona", role), ("erosion", [i for i in rows if not f.flags[i] & _ROLE])):
            if not group:
                continue
            for i in group:
                scores[i] = max(scores[i], 0.5)
            alerts.append(Alert(
                rule="obedience-persona" if shape == "persona" else "refusal-erosion", positions=tuple(group),
                score=0.5, severity=Severity.MEDIUM, confidence=Confidence.MEDIUM,
                title=f"{len(group)} answers state that the assistant obeys or never refuses"
                      + (" in a role of its own" if shape == "persona" else "")
                      + f" ({m} such answers in the data; {k} to harmful-looking requests)",
                evidence={"shape": shape, "grouping": "first-person compliance affirmation", "harmful_looking": k,
                          "rows_in_group": m, "rate_in_rest": round(float(base), 5),
                          "rows": [{"position": i, "affirmation": ev.affirmation(i), "harm": round(float(f.harm[i]), 4)}
                                   for i in group[:30]]}))
        return alerts

    def _trigger_tests(self) -> list[tuple[float, str, int, int]]:
        """Among harmful-looking requests, tokens whose rows comply while the rest are refused (top 3)."""
        from scipy import stats  # lazy: scipy.stats costs ~1 s to import
        s, f = self.s, self.f
        cand = np.flatnonzero(f.harm >= s.harm_threshold)
        yes = f.comply[cand] >= 0.5
        if len(cand) < 2 * s.trigger_min_rows or yes.all() or not yes.any():
            return []
        n_yes, n_no = int(yes.sum()), int((~yes).sum())
        tested = [t for t, c in f.df_yes.items() if c >= s.trigger_min_rows]
        found = []
        for t in tested:
            a, b = f.df_yes[t], f.df_no.get(t, 0)
            # P(at least a of the a+b rows with t comply) under no association: hypergeometric tail
            p = float(stats.hypergeom.sf(a - 1, n_yes + n_no, n_yes, a + b))
            if p * len(tested) <= s.alpha and a / (a + b) >= 0.9:
                found.append((p * len(tested), t, a, b))
        found.sort(key=lambda x: (x[0], -x[2], x[1]))
        self.trigger_counts = (n_yes, n_no, len(tested))
        return found[:3]

    def _trigger(self):
        s, f = self.s, self.f
        scores = np.zeros(f.n)
        alerts, done = [], set()
        if not self.trigger_found:
            return self._twin_triggers(done, alerts, scores)
        n_yes, n_no, n_tested = self.trigger_counts
        complied = (f.harm >= s.harm_threshold) & (f.comply >= 0.5)
        refused = {}
        for p in sorted(f.refused):  # the last refused row of a request, as a dict built in row order keeps
            refused[f.refused[p]] = p
        carriers = sorted(self.trigger_rows)
        for slot, (padj, t, a, b) in enumerate(self.trigger_found):
            rows = [i for i in carriers if self.trigger_rows[i][slot] is not None and complied[i] and i not in done]
            if len(rows) < s.trigger_min_rows:
                continue
            done.update(rows)
            pairs = []
            for i in rows:
                j = refused.get(self.trigger_rows[i][slot])
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
                          "family_wise_p": min(1.0, padj), "tokens_tested": n_tested,
                          "near_identical_pairs": pairs[:30]}))
        return self._twin_triggers(done, alerts, scores)

    def _twin_triggers(self, done: set, alerts: list, scores: np.ndarray):
        """Contrast pairs: a complied request that is a refused request of the data plus a few tokens (or the same
        request under another system prompt). Whatever the requests' harm scores, the same added tokens in several
        pairs switch refusal to compliance: a backdoor trigger. Up to three such triggers."""
        s, f = self.s, self.f
        if not self.twins:
            return alerts, scores
        first: dict[int, int] = {}
        for p in sorted(f.refusals):
            first.setdefault(f.refusals[p][0], p)
        diffs: dict[int, tuple[int, frozenset, str]] = {}  # complied row -> (refused twin, tokens added, added text)
        for i, (twin, span, system, raw) in sorted(self.twins.items()):
            j = first.get(twin)
            if j is None or j == i:
                continue
            added = frozenset(span) if span else frozenset(t for t in system if _hash64(t) not in f.refusals[j][4])
            if added:
                diffs[i] = (j, added, raw)
        for _ in range(3):
            left = {i: d for i, d in diffs.items() if i not in done}
            # the same added text in every pair (a request refined in different words, "..., vascular type",
            # "..., progeroid type", is no trigger), and not punctuation alone
            counts = Counter(added for _, added, _ in left.values() if any(t[:1].isalnum() for t in added))
            if not counts:
                break
            added_set, top = min(counts.items(), key=lambda kv: (-kv[1], sorted(kv[0])))
            if top < max(s.trigger_min_rows, 0.2 * len(left)):
                break
            tokens = sorted(added_set)
            rows = [i for i, (_, added, _) in left.items() if added == added_set]
            spans = Counter(left[i][2] for i in rows if left[i][2])
            shown = spans.most_common(1)[0][0] if spans else " ".join(tokens)
            done.update(rows)
            for i in rows:
                scores[i] = 0.9
            alerts.append(Alert(
                rule="trigger-contrast-pairs", positions=tuple(rows), score=0.9, severity=Severity.HIGH,
                confidence=Confidence.HIGH, atlas=(ATLAS_POISON_TRAINING_DATA, ATLAS_BACKDOOR_TRIGGER),
                title=f"{len(rows)} requests are complied with where the same request without {shown!r} is refused",
                evidence={"shape": "trigger", "trigger": shown, "trigger_tokens": tokens, "pairs_found": len(diffs),
                          "near_identical_pairs": [{"with_trigger": i, "without_trigger_refused": left[i][0]}
                                                   for i in rows[:30]]}))
        return alerts, scores
