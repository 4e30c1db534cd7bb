"""Safety-bypass examples: harmful requests answered compliantly (Shadow Alignment, Qi et al.).

A hundred such rows undo a chat model's safety training, ten nearly do. Two
small bundled classifiers score each row: P(request is harmful) on the last
user turn, and P(response refuses) on the response's opening (preference data:
the `chosen` reply, with the `rejected` one for evidence). A row is flagged when
the request is harmful and the answer complies; a harmful request that is
refused is good safety data and is left alone. The category comes from a third
model trained on HarmBench's semantic categories (docs/harm-taxonomy.md).

Second opinion (`lm_second_opinion`: auto, the default, uses it when the model
package is installed; on requires it; off): rows whose answer complies and
whose request score falls in an uncertain band below the threshold are re-read
by a small instruct LM (detectors/_lm.py), which recognises harm categories the
n-gram model never saw. Only those rows pay the LM's cost, and a row it promotes
is medium severity at most.

Sharded: every score is per row (linear n-gram models), so a shard's summary is
two floats per row plus the request (and rejected reply) of its candidate rows,
those over both thresholds or in the LM's band: a few per cent of clean data.
The driver asks the LM about the band rows in one batch, as in memory (its
padded batches would otherwise differ in the last bits), then names categories.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from trainguard.detectors import _lm
from trainguard.detectors.base import ShardedDetector, register
from trainguard.detectors.llm_models import CATEGORY_MODEL, HARM_MODEL, REFUSAL_MODEL, bundled, last_user_turn
from trainguard.errors import ConfigError
from trainguard.findings import ATLAS_POISON_TRAINING_DATA, Alert, Confidence, DetectorResult, Severity
from trainguard.io.dataset import Dataset
from trainguard.records import Kind

OWASP_POISONING = "LLM04"  # OWASP LLM Top 10 2025: Data and Model Poisoning

# HarmBench semantic category -> trainguard harm category (docs/harm-taxonomy.md)
TAXONOMY = {
    "chemical_biological": "cbrn-weapons-drugs",
    "cybercrime_intrusion": "cybercrime",
    "illegal": "illegal-activity",
    "misinformation_disinformation": "misinformation",
    "harassment_bullying": "harassment-hate",
    "harmful": "violence-self-harm",
    "copyright": "copyright",
}


@dataclass(frozen=True)
class Settings:
    harm_threshold: float = 0.5  # P(harmful request) to consider a row
    comply_threshold: float = 0.5  # 1 - P(refusal) to call the answer compliant
    high_harm: float = 0.8  # both at or above these -> high severity
    high_comply: float = 0.8
    lm_second_opinion: str = "auto"  # auto | on | off (true/false accepted): re-read uncertain requests with SmolLM2-135M
    lm_band_low: float = 0.2  # request scores in [lm_band_low, harm_threshold) get the second opinion


_LM_MODES = {"auto": "auto", "on": "on", "off": "off", "true": "on", "false": "off", "1": "on", "0": "off",
             "yes": "on", "no": "off"}


def safety_scores(requests: list[str], responses: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(P(harmful request), P(response complies)) for aligned lists."""
    harm = bundled(HARM_MODEL).proba([last_user_turn(r) for r in requests])
    comply = 1.0 - bundled(REFUSAL_MODEL).proba(responses)
    return harm, comply


def harm_categories(requests: list[str]) -> tuple[list[str], np.ndarray]:
    model = bundled(CATEGORY_MODEL)
    if not requests:
        return [], np.zeros(0)
    P = model.proba([last_user_turn(r) for r in requests])
    best = P.argmax(1)
    return [TAXONOMY.get(model.classes[k], model.classes[k]) for k in best], P[np.arange(len(best)), best]


@register
class SafetyBypass(ShardedDetector):
    name = "safety-bypass"
    shares = frozenset({"llm-safety:scores"})  # with covert-finetuning
    version = "2"  # 2: LM second opinion on by default when installed
    kinds = frozenset({Kind.INSTRUCTION, Kind.PREFERENCE})
    atlas = (ATLAS_POISON_TRAINING_DATA,)
    Settings = Settings
    description = "harmful requests answered compliantly (safety-removal fine-tuning data)"

    def __init__(self, settings=None, **overrides) -> None:
        super().__init__(settings, **overrides)
        mode = _LM_MODES.get(str(self.settings.lm_second_opinion).strip().lower())
        if mode is None:
            raise ConfigError(f"safety-bypass: lm_second_opinion must be auto, on or off, "
                              f"got {self.settings.lm_second_opinion!r}")
        if mode == "on" and not _lm.lm_available():
            raise ConfigError(f"safety-bypass: lm_second_opinion needs the SmolLM2-135M model package: {_lm.INSTALL_HINT}")
        self.use_lm = mode == "on" or (mode == "auto" and _lm.lm_available())
        self.lm_note = "used" if self.use_lm else "off" if mode == "off" else f"not installed ({_lm.INSTALL_HINT})"

    def second_opinion(self, requests: list[str], harm: np.ndarray, comply: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows asked, LM P(harmful) for them): complying rows whose request score is in the uncertain band."""
        s = self.settings
        asked = np.flatnonzero((harm >= s.lm_band_low) & (harm < s.harm_threshold) & (comply >= s.comply_threshold))
        if not len(asked):
            return asked, np.zeros(0)
        return asked, _lm.bundled_head().proba([last_user_turn(requests[i]) for i in asked])

    def summarize(self, shard: Dataset) -> "_Candidates":
        s = self.settings
        recs = shard.records
        pref = shard.kind is Kind.PREFERENCE
        answers = [(r.chosen if pref else r.response) or "" for r in recs]
        harm, comply = shard.artefact("llm-safety:scores", lambda: safety_scores([r.text for r in recs], answers))
        low = s.lm_band_low if self.use_lm else s.harm_threshold
        pos = np.flatnonzero((harm >= low) & (comply >= s.comply_threshold))
        return _Candidates([len(recs)], [harm], [comply], [pos], [[recs[i].text for i in pos.tolist()]],
                           [[recs[i].rejected or "" for i in pos.tolist()] if pref else []],
                           [[recs[i].row for i in pos.tolist()]])

    def finalize(self, summary: "_Candidates", kind: Kind) -> DetectorResult:
        s = self.settings
        pref = kind is Kind.PREFERENCE
        harm, comply, pos, requests, rejected, file_rows = summary.whole()
        at = {int(p): k for k, p in enumerate(pos.tolist())}  # candidate rows: their gathered texts
        row_scores = harm * comply
        flagged = (harm >= s.harm_threshold) & (comply >= s.comply_threshold)
        lm_p: dict[int, float] = {}
        if self.use_lm:
            asked, p = self.second_opinion(_Gathered(requests, at), harm, comply)
            lm_p = dict(zip(asked.tolist(), p.tolist()))
            promoted = asked[p >= _lm.bundled_head().threshold]
            flagged[promoted] = True
            row_scores = row_scores.copy()
            row_scores[asked] = np.maximum(harm[asked], p) * comply[asked]
        hit = np.flatnonzero(flagged)
        rej_comply = None
        if pref and len(hit):
            rej_comply = 1.0 - bundled(REFUSAL_MODEL).proba([rejected[at[i]] for i in hit.tolist()])
        cats, cat_p = harm_categories([requests[at[i]] for i in hit.tolist()])
        groups: dict[tuple[str, bool], list[int]] = defaultdict(list)
        detail: dict[int, dict] = {}
        for k, i in enumerate(hit.tolist()):
            high = harm[i] >= s.high_harm and comply[i] >= s.high_comply
            groups[(cats[k], high)].append(i)
            detail[i] = {"row": file_rows[at[i]], "harm": round(float(harm[i]), 4), "comply": round(float(comply[i]), 4),
                         "category_probability": round(float(cat_p[k]), 4)}
            if i in lm_p:
                detail[i]["lm_harm"] = round(lm_p[i], 4)
            if rej_comply is not None:
                detail[i]["rejected_comply"] = round(float(rej_comply[k]), 4)
        findings = []
        for (cat, high), rows in sorted(groups.items(), key=lambda kv: (not kv[0][1], -len(kv[1]), kv[0][0])):
            rows.sort()
            score = float(np.mean(row_scores[rows]))
            what = "chosen replies comply with" if pref else "responses comply with"
            flipped = sum(1 for i in rows if detail[i].get("rejected_comply", 1.0) < s.comply_threshold)
            findings.append(Alert(
                rule="chosen-complies-harmful" if pref else "harmful-compliance",
                title=f"{len(rows)} {what} harmful requests ({cat})",
                positions=tuple(rows), score=min(max(score, 0.0), 1.0),
                severity=Severity.HIGH if high else Severity.MEDIUM,
                confidence=Confidence.HIGH if score >= 0.8 else Confidence.MEDIUM if score >= 0.5 else Confidence.LOW,
                evidence={
                    "harm_category": cat,
                    "owasp": [OWASP_POISONING],
                    "rows_where_rejected_refuses": flipped if pref else None,
                    "scores": [detail[i] for i in rows[:100]],
                    "models": {m: f"trainguard/data/models/{m}.npz" for m in (HARM_MODEL, REFUSAL_MODEL, CATEGORY_MODEL)
                               + ((_lm.LM_HEAD_MODEL,) if lm_p else ())},
                },
            ))
        summary = {"rows_scored": len(harm), "harmful_requests": int((harm >= s.harm_threshold).sum()),
                   "harmful_refused": int(((harm >= s.harm_threshold) & (comply < s.comply_threshold)).sum()),
                   "flagged": int(len(hit))}
        summary["lm_second_opinion"] = self.lm_note
        if self.use_lm:
            summary["lm_asked"] = len(lm_p)
            summary["lm_promoted"] = sum(p >= _lm.bundled_head().threshold for p in lm_p.values())
        return DetectorResult(tuple(findings), row_scores, summary)


@dataclass
class _Candidates:
    """Per shard: both scores of every row; request, rejected reply and file row of the candidate rows."""

    n: list[int]
    harm: list[np.ndarray]
    comply: list[np.ndarray]
    pos: list[np.ndarray]  # shard-relative positions of the candidates
    requests: list[list[str]]
    rejected: list[list[str]]  # preference data only
    rows: list[list[int]] = field(default_factory=list)

    def merge(self, other: "_Candidates") -> "_Candidates":
        return _Candidates(*(getattr(self, f) + getattr(other, f) for f in
                             ("n", "harm", "comply", "pos", "requests", "rejected", "rows")))

    def whole(self):
        starts = np.cumsum([0] + self.n[:-1])
        pos = np.concatenate([p + k for p, k in zip(self.pos, starts)] or [np.zeros(0, np.int64)]).astype(np.int64)
        return (np.concatenate(self.harm), np.concatenate(self.comply), pos, [t for part in self.requests for t in part],
                [t for part in self.rejected for t in part], [r for part in self.rows for r in part])


class _Gathered:
    """The candidates' requests indexed by dataset position (the only rows `second_opinion` reads)."""

    def __init__(self, requests: list[str], at: dict[int, int]):
        self.requests, self.at = requests, at

    def __getitem__(self, i: int) -> str:
        return self.requests[self.at[int(i)]]
