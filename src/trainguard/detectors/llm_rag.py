"""RAG knowledge-base scan: injected instructions, hidden text, PoisonedRAG passage groups.

PoisonedRAG writes passages as S (+) I: the target question S (so the passage is
retrieved for it) followed by text asserting the attacker's answer, several per
question. Perplexity and duplicate filters miss them (fluent, not duplicates).
What gives them away in a store is the group: several passages that open with
the same question and then say different things, where honest stores hold one
answer per question (copies of it are duplicates, not a group). With a queries
file, passages opening with a near-copy of a known query are flagged too.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainguard.detectors.base import Detector, register
from trainguard.detectors.invisible_chars import is_hidden
from trainguard.errors import ConfigError
from trainguard.findings import ATLAS_POISON_TRAINING_DATA, Confidence, DetectorResult, Finding, Severity
from trainguard.io.dataset import Dataset
from trainguard.records import Kind
from trainguard.text import tokens

ATLAS_RAG_POISONING = "AML.T0070"
ATLAS_FALSE_RAG_ENTRY = "AML.T0071"
OWASP = ["LLM04", "LLM08"]

INJECTION = re.compile(
    r"ignore (all |any )?(the )?(previous|prior|above) (instructions|prompts?)|disregard (the|all|any|your) "
    r"(previous |prior )?(instructions|context|rules)|you are now (a|an|in)\b|system prompt|"
    r"\b(respond|answer|reply) (only )?with\b|when (you are |you're )?asked about\b|"
    r"do not (tell|mention|reveal)\b.{0,40}\b(user|anyone)|\[/?INST\]|<\|im_start\|>|<\|system\|>|"
    r"\bas an ai (language )?model,? you must\b", re.IGNORECASE)
HIDDEN_MARKUP = re.compile(r"<!--.*?-->|display\s*:\s*none|font-size\s*:\s*0|color\s*:\s*(white|#fff\b)", re.I | re.S)
_LEAD = re.compile(r"^\s*([^?]{8,300}\?)")


@dataclass(frozen=True)
class Settings:
    queries: str = ""  # optional JSONL/text file of user questions (one per line or {"question": ...})
    min_group: int = 3  # passages opening with the same question and saying different things
    body_dup_jaccard: float = 0.8  # bodies this similar are copies, not disagreeing passages
    query_jaccard: float = 0.8  # lead-sentence token overlap counting as a near-copy of a query


def _norm(text: str) -> str:
    return " ".join(tokens(text))


def _jac(a: set, b: set) -> float:
    return len(a & b) / max(len(a | b), 1)


def load_queries(path: str) -> list[str]:
    import json

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"queries file {p} not found")
    out = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{p}:{n}: not JSON ({e.msg})") from None
            q = obj.get("question") or obj.get("query") or obj.get("text")
            if not isinstance(q, str):
                raise ConfigError(f"{p}:{n}: no question/query/text field")
            out.append(q)
        else:
            out.append(line.strip())
    return out


@register
class RagPoisoning(Detector):
    name = "rag-poisoning"
    version = "1"
    kinds = frozenset({Kind.DOCUMENTS})
    atlas = (ATLAS_RAG_POISONING, ATLAS_FALSE_RAG_ENTRY, ATLAS_POISON_TRAINING_DATA)
    Settings = Settings
    description = "passages with injected instructions or hidden text, and PoisonedRAG question-led groups"

    def run(self, data: Dataset) -> DetectorResult:
        s = self.settings
        recs = data.records
        n = len(recs)
        scores = np.zeros(n)
        findings: list[Finding] = []
        inj = [i for i, r in enumerate(recs) if INJECTION.search(r.text)]
        hid = [i for i, r in enumerate(recs) if HIDDEN_MARKUP.search(r.text) or any(is_hidden(c) for c in r.text)]
        for rule, rows, title, sev in (("prompt-injection", inj, "passages carry instructions to the model", Severity.HIGH),
                                       ("hidden-text", hid, "passages carry hidden text or markup", Severity.MEDIUM)):
            if rows:
                scores[rows] = np.maximum(scores[rows], 0.9 if sev is Severity.HIGH else 0.6)
                findings.append(self._finding(data, rule, f"{len(rows)} {title}", rows, 0.9, sev, {
                    "examples": [self._snip(recs[i].text, rule) for i in rows[:5]]}))
        # question-led groups
        lead: dict[str, list[int]] = defaultdict(list)
        body: dict[int, set] = {}
        for i, r in enumerate(recs):
            m = _LEAD.match(r.text)
            if m:
                lead[_norm(m.group(1))].append(i)
                body[i] = set(tokens(r.text[m.end():])[:80])
        queries = [set(tokens(q)) for q in load_queries(s.queries)] if s.queries else []
        for q, rows in sorted(lead.items(), key=lambda kv: kv[1][0]):
            distinct: list[int] = []
            for i in rows:
                if all(_jac(body[i], body[j]) < s.body_dup_jaccard for j in distinct):
                    distinct.append(i)
            near_query = any(_jac(set(q.split()), qs) >= s.query_jaccard for qs in queries)
            if len(distinct) >= s.min_group or (near_query and len(rows) >= 1 and len(distinct) >= 2):
                sc = min(1.0, 0.5 + 0.1 * len(distinct))
                scores[rows] = np.maximum(scores[rows], sc)
                findings.append(self._finding(
                    data, "question-led-group",
                    f"{len(rows)} passages open with the same question and give {len(distinct)} different answers",
                    rows, sc, Severity.HIGH if len(distinct) >= s.min_group else Severity.MEDIUM,
                    {"question": q[:200], "distinct_answers": len(distinct), "matches_query": near_query}))
        summary = {"passages": n, "question_led": sum(len(v) for v in lead.values()), "findings": len(findings)}
        return DetectorResult(tuple(findings), scores, summary)

    def _finding(self, data, rule, title, rows, score, sev, evidence) -> Finding:
        rows = sorted(set(rows))
        return Finding(detector=self.name, rule=rule, detector_version=self.version, title=title,
                       rows=tuple(rows), record_ids=tuple(data.records[i].id for i in rows), score=float(score),
                       severity=sev, confidence=Confidence.HIGH if score >= 0.8 else Confidence.MEDIUM,
                       atlas=self.atlas, evidence={**evidence, "owasp": OWASP})

    @staticmethod
    def _snip(text: str, rule: str) -> str:
        from trainguard.text import visible

        m = (INJECTION if rule == "prompt-injection" else HIDDEN_MARKUP).search(text)
        a = max(0, (m.start() if m else 0) - 40)
        return visible(text[a: a + 120])
