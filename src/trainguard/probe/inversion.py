"""Trigger inversion: search for an unknown trigger instead of guessing it.

Length 1, white-box (torch models exposing their embedding matrix): HotFlip
style. The trigger slot's input embedding is differentiated; the first-order
change in the target-label loss for swapping in token v is -(E_v . grad), so
one backward pass ranks the whole vocabulary; the top-k are then evaluated
exactly. Length 1, black-box (endpoints): every vocabulary word is inserted
into a few clean inputs per label and ranked by how far it pushes them to
that label. Lengths 2 and 3, both: each label's beam grows by one of its best
single words at either end, screened the same way. Lengths are searched in
turn, stopping at the first whose proposals are flagged; every proposal is
measured like any other candidate and tested against the null of its length
(probing.py), with one family-wise bound over everything scored at every
length, so the verdict means the same for both methods.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from trainguard.probe.adapters import BudgetExhausted, ClassifierModel, WhiteBoxClassifier
from trainguard.probe.candidates import POSITIONS, Candidate, dedupe, search_words
from trainguard.probe.probing import ClassifierProbe, Inputs, Prober, Settings
from trainguard.probe.search import SearchSettings, grow, most_confident, rank_words, start
from trainguard.text import tokens


@dataclass
class InvertSettings:
    per_label: int = 10        # proposals kept per target label
    grad_inputs: int = 64      # clean inputs the gradient is averaged over
    grad_top_k: int = 64       # tokens kept per linearisation point, then evaluated exactly
    grad_starts: int = 4       # linearisation points: zero embedding + random tokens
    length: int = 3            # longest trigger searched: lengths 1..length in turn, stopping at a flagged one
    screen_inputs: int = 8     # black-box: clean inputs per label each vocabulary word is tried on
    beam: int = 8
    max_vocab: int | None = None  # black-box: search only the first N vocabulary words (stated in the result)
    seed: int = 0


@dataclass
class Inversion:
    probe: ClassifierProbe
    method: str
    proposals: list[Candidate]
    searched: int               # vocabulary entries ranked
    requests: int
    seconds: float
    complete: bool = True
    message: str = ""
    settings: InvertSettings = field(default_factory=InvertSettings)
    vocabulary: int = 0         # black-box: vocabulary entries offered (searched < vocabulary: the search was cut)
    lengths: list[int] = field(default_factory=list)   # trigger lengths searched
    family: dict[int, int] = field(default_factory=dict)  # candidates searched per length (the verdict's family)

    @property
    def truncated(self) -> bool:
        return self.method == "black-box" and self.searched < self.vocabulary


def is_white_box(model: Any) -> bool:
    return all(hasattr(model, a) for a in ("embedding_matrix", "logits_from_embeds", "encode", "vocabulary"))


def invert(model: ClassifierModel, inputs: Inputs, *, vocabulary: Sequence[str] | None = None,
           extra: Sequence[Candidate] = (), method: str = "auto", settings: InvertSettings | None = None,
           probe_settings: Settings | None = None) -> Inversion:
    """Propose triggers of length 1, 2, 3 (gradient or black-box search) and measure them; one verdict."""
    s = settings or InvertSettings()
    t0 = time.perf_counter()
    used0 = model.budget.used
    if method == "auto":
        method = "gradient" if is_white_box(model) else "black-box"
    if method not in ("gradient", "black-box"):
        raise ValueError(f"unknown inversion method {method!r}")
    if method == "gradient" and not is_white_box(model):
        raise ValueError("gradient inversion needs a white-box torch model")
    if not 1 <= s.length <= 3:
        raise ValueError(f"trigger length must be 1, 2 or 3, got {s.length}")
    prober = Prober(model, inputs, probe_settings)
    search = SearchSettings(s.per_label, s.screen_inputs, s.beam)
    words: list[str] = []
    offered = 0
    if method == "black-box":
        words = search_words(vocabulary or getattr(model, "vocabulary", None) or fallback_vocabulary(inputs.texts))
        offered = len(words)
        words = words[: s.max_vocab] if s.max_vocab else words
    family: dict[int, int] = {}
    for c in dedupe(extra):
        family[c.length] = family.get(c.length, 0) + 1
    prober.measure(extra)
    proposals: list[Candidate] = []
    lengths: list[int] = []
    state: Any = None
    probe: ClassifierProbe | None = None  # a verdict that stopped the search early, reused below
    for k in range(1, s.length + 1):
        if prober.why:
            break
        try:
            if k == 1:
                if method == "gradient":
                    per_label, scored = propose_gradient(model, inputs, prober.proba0, s)  # type: ignore[arg-type]
                else:
                    per_label, why = rank_words(model, inputs, prober.proba0, words, search)
                    scored, prober.why = len(words), prober.why or why
                tag = f"inversion:{method}"
                found = dedupe(Candidate(w, tag) for lab in per_label for w in lab[: s.per_label])
                state = start(per_label, search)
            else:
                found, grown_k, why, state = grow(model, inputs, prober.proba0, search, state, "inversion:beam")
                scored, prober.why = family[1] + grown_k, prober.why or why
        except BudgetExhausted as e:
            prober.why = str(e)
            break
        lengths.append(k)
        family[k] = family.get(k, 0) + scored
        proposals.extend(found)
        prober.measure(found)
        if k < s.length:
            probe = prober.conclude(family, s.length)
            if probe.verdict.backdoored:
                break
    if probe is None or not probe.verdict.backdoored:
        probe = prober.conclude(family, s.length)
    searched = len(words) if method == "black-box" else int(model.embedding_matrix().shape[0])  # type: ignore[attr-defined]
    return Inversion(probe, method, dedupe(proposals), searched, model.budget.used - used0,
                     time.perf_counter() - t0, not prober.why, prober.why, s, offered or searched, lengths, family)


def fallback_vocabulary(texts: Sequence[str]) -> list[str]:
    """Without the model's vocabulary, search the words of the clean data."""
    return sorted({t for text in texts for t in tokens(text)})


# ---- white-box -------------------------------------------------------------------------------------------

def _slot_batch(model: WhiteBoxClassifier, texts: Sequence[str], length: int, positions: Sequence[str]):
    """Token ids with `length` trigger slots inserted (position cycling), padded; plus slot offsets."""
    import torch

    max_len = getattr(getattr(model, "clf", None), "max_len", 10_000)
    rows, offsets = [], []
    for i, ids in enumerate(model.encode(texts)):
        ids = ids[: max(0, max_len - length)]
        pos = positions[i % len(positions)]
        at = 0 if pos == "start" else len(ids) // 2 if pos == "middle" else len(ids)
        rows.append(ids[:at] + [0] * length + ids[at:])
        offsets.append(at)
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width))
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1.0
    return ids, mask, torch.tensor(offsets)


def _embeds_with(E, ids, mask, offsets, trig):
    """Input embeddings with trigger embeddings `trig` [K, L, d] at the slots -> [K*B, T, d]."""
    import torch

    K, L, _ = trig.shape
    B = ids.shape[0]
    base = (E[ids] * mask.unsqueeze(-1)).detach()
    out = base.unsqueeze(0).expand(K, *base.shape).clone()
    rows = torch.arange(B)
    for l in range(L):
        out[:, rows, offsets + l, :] = trig[:, l, :].unsqueeze(1).expand(K, B, -1)
    return out.reshape(K * B, *base.shape[1:]), mask.repeat(K, 1)


def propose_gradient(model: WhiteBoxClassifier, inputs: Inputs, proba0: np.ndarray,
                     s: InvertSettings) -> tuple[list[list[str]], int]:
    """Per target label, the best single tokens: gradient-ranked vocabulary, exact check of the top-k.

    Returns the tokens per label (best first) and how many candidates the
    search scored (the whole vocabulary).
    """
    import torch
    from torch.nn import functional as F

    E = model.embedding_matrix().detach()
    V = E.shape[0]
    allowed = torch.ones(V, dtype=torch.bool)
    allowed[list(model.special_ids)] = False
    gen = torch.Generator().manual_seed(s.seed)
    out: list[list[str]] = []
    for c in range(len(model.labels)):
        idx = most_confident(proba0, c, s.grad_inputs)
        if len(idx) == 0:
            out.append([])
            continue
        ids, mask, offsets = _slot_batch(model, [inputs.texts[i] for i in idx], 1, POSITIONS)
        target = torch.full((len(idx),), c, dtype=torch.long)

        def loss_of(trig_ids: torch.Tensor) -> torch.Tensor:  # [K, 1] -> [K] mean loss, no grad
            with torch.no_grad():
                res = []
                for chunk in trig_ids.split(max(1, 4096 // len(idx))):
                    emb, m = _embeds_with(E, ids, mask, offsets, E[chunk])
                    logits = model.logits_from_embeds(emb, m)
                    res.append(F.cross_entropy(logits, target.repeat(len(chunk)), reduction="none")
                               .view(len(chunk), -1).mean(1))
                return torch.cat(res)

        def grad_scores(trig_emb: torch.Tensor) -> torch.Tensor:  # [1, d] -> [1, V] first-order gain
            t = trig_emb.clone().requires_grad_(True)
            emb, m = _embeds_with(E, ids, mask, offsets, t.unsqueeze(0))
            loss = F.cross_entropy(model.logits_from_embeds(emb, m), target)
            (g,) = torch.autograd.grad(loss, t)
            sc = -(g @ E.T)
            sc[:, ~allowed] = -float("inf")
            return sc

        # Linearise at several points (a neutral zero embedding and random tokens): one point misleads
        # a ReLU / max-pool model, whose gradient only sees the filters the slot currently wins.
        starts = [torch.zeros(1, E.shape[1])]
        pool = torch.nonzero(allowed).squeeze(1)
        for _ in range(s.grad_starts - 1):
            starts.append(E[pool[torch.randint(0, len(pool), (1,), generator=gen)]])
        k = min(s.grad_top_k, int(allowed.sum()))
        top = torch.unique(torch.cat([grad_scores(st)[0].topk(k).indices for st in starts]))
        exact = loss_of(top.unsqueeze(1))
        keep = max(s.per_label, s.beam)
        out.append([model.vocabulary[int(v)] for v in top[exact.argsort()][:keep]])
    return out, V
