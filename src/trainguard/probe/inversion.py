"""Trigger inversion: search for an unknown trigger instead of guessing it.

White-box (torch models exposing their embedding matrix): HotFlip / GCG-style.
The trigger slot's input embedding is differentiated; the first-order change
in the target-label loss for swapping in token v is -(E_v . grad), so one
backward pass ranks the whole vocabulary; the top-k are then evaluated
exactly and the best kept. Longer triggers are grown one coordinate swap at a
time (GCG). Black-box (endpoints): every vocabulary word is inserted into a
few clean inputs per label and ranked by how far it pushes them to that label;
the best are grown into two-word triggers by beam search if asked. Either way
the proposals are then measured like any other candidate (probing.py), so
the verdict and its score mean the same for both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from trainguard.probe.adapters import BudgetExhausted, ClassifierModel, WhiteBoxClassifier
from trainguard.probe.candidates import POSITIONS, Candidate, dedupe, insert
from trainguard.probe.probing import ClassifierProbe, Inputs, Settings, probe_classifier
from trainguard.text import tokens


@dataclass
class InvertSettings:
    per_label: int = 10        # proposals kept per target label
    grad_inputs: int = 64      # clean inputs the gradient is averaged over
    grad_top_k: int = 64       # tokens kept per linearisation point, then evaluated exactly
    grad_starts: int = 4       # linearisation points: zero embedding + random tokens
    length: int = 1            # trigger length in tokens (white-box GCG / black-box beam)
    gcg_steps: int = 30
    gcg_swaps: int = 64
    screen_inputs: int = 8     # black-box: clean inputs per label each vocabulary word is tried on
    beam: int = 8
    max_vocab: int = 20_000
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


def is_white_box(model: Any) -> bool:
    return all(hasattr(model, a) for a in ("embedding_matrix", "logits_from_embeds", "encode", "vocabulary"))


def invert(model: ClassifierModel, inputs: Inputs, *, vocabulary: Sequence[str] | None = None,
           extra: Sequence[Candidate] = (), method: str = "auto", settings: InvertSettings | None = None,
           probe_settings: Settings | None = None) -> Inversion:
    """Propose triggers (gradient or black-box search), then measure them with the prober."""
    s = settings or InvertSettings()
    t0 = time.perf_counter()
    used0 = model.budget.used
    if method == "auto":
        method = "gradient" if is_white_box(model) else "black-box"
    if method not in ("gradient", "black-box"):
        raise ValueError(f"unknown inversion method {method!r}")
    why = ""
    proposals: list[Candidate] = []
    searched = 0
    try:
        proba0 = model.predict_proba(inputs.texts)
        if method == "gradient":
            if not is_white_box(model):
                raise ValueError("gradient inversion needs a white-box torch model")
            proposals, searched = propose_gradient(model, inputs, proba0, s)  # type: ignore[arg-type]
        else:
            vocab = list(vocabulary or getattr(model, "vocabulary", None) or fallback_vocabulary(inputs.texts))
            proposals, searched, why = propose_blackbox(model, inputs, proba0, vocab, s)
    except BudgetExhausted as e:
        why = str(e)
    probe = probe_classifier(model, inputs, dedupe([*proposals, *extra]), probe_settings)
    why = why or probe.message
    return Inversion(probe, method, proposals, searched, model.budget.used - used0, time.perf_counter() - t0,
                     not why, why, s)


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


def _most_confident(proba0: np.ndarray, c: int, k: int) -> np.ndarray:
    """The k inputs most confidently NOT label c: the ones only a trigger should flip."""
    idx = np.flatnonzero(proba0.argmax(axis=1) != c)
    return idx[np.argsort(-proba0[idx].max(axis=1), kind="stable")][:k]


def propose_gradient(model: WhiteBoxClassifier, inputs: Inputs, proba0: np.ndarray,
                     s: InvertSettings) -> tuple[list[Candidate], int]:
    """Per target label: gradient-ranked vocabulary, exact check of the top-k, GCG for longer triggers."""
    import torch
    from torch.nn import functional as F

    E = model.embedding_matrix().detach()
    V = E.shape[0]
    allowed = torch.ones(V, dtype=torch.bool)
    allowed[list(model.special_ids)] = False
    gen = torch.Generator().manual_seed(s.seed)
    out: list[Candidate] = []
    for c in range(len(model.labels)):
        idx = _most_confident(proba0, c, s.grad_inputs)
        if len(idx) == 0:
            continue
        ids, mask, offsets = _slot_batch(model, [inputs.texts[i] for i in idx], s.length, POSITIONS)
        target = torch.full((len(idx),), c, dtype=torch.long)

        def loss_of(trig_ids: torch.Tensor) -> torch.Tensor:  # [K, L] -> [K] mean loss, no grad
            with torch.no_grad():
                res = []
                for chunk in trig_ids.split(max(1, 4096 // len(idx))):
                    emb, m = _embeds_with(E, ids, mask, offsets, E[chunk])
                    logits = model.logits_from_embeds(emb, m)
                    res.append(F.cross_entropy(logits, target.repeat(len(chunk)), reduction="none")
                               .view(len(chunk), -1).mean(1))
                return torch.cat(res)

        def grad_scores(trig_emb: torch.Tensor) -> torch.Tensor:  # [L, d] -> [L, V] first-order gain
            t = trig_emb.clone().requires_grad_(True)
            emb, m = _embeds_with(E, ids, mask, offsets, t.unsqueeze(0))
            loss = F.cross_entropy(model.logits_from_embeds(emb, m), target)
            (g,) = torch.autograd.grad(loss, t)
            sc = -(g @ E.T)
            sc[:, ~allowed] = -float("inf")
            return sc

        # Linearise at several points (a neutral zero embedding and random tokens): one point misleads
        # a ReLU / max-pool model, whose gradient only sees the filters the slot currently wins.
        starts = [torch.zeros(s.length, E.shape[1])]
        pool = torch.nonzero(allowed).squeeze(1)
        for _ in range(s.grad_starts - 1):
            starts.append(E[pool[torch.randint(0, len(pool), (s.length,), generator=gen)]])
        k = min(s.grad_top_k, int(allowed.sum()))
        all_scores = [grad_scores(st) for st in starts]
        scores = all_scores[0]
        top = torch.unique(torch.cat([sc[0].topk(k).indices for sc in all_scores]))
        if s.length == 1:
            exact = loss_of(top.unsqueeze(1))
            order = top[exact.argsort()][: s.per_label]
            out.extend(Candidate(model.vocabulary[int(v)], "inversion:gradient") for v in order)
            continue
        cur = scores.argmax(dim=1)
        best = float(loss_of(cur.unsqueeze(0))[0])
        for _ in range(s.gcg_steps):
            sc = grad_scores(E[cur])
            topk = sc.topk(min(s.grad_top_k, int(allowed.sum())), dim=1).indices  # [L, k]
            slot = torch.randint(0, s.length, (s.gcg_swaps,), generator=gen)
            pick = topk[slot, torch.randint(0, topk.shape[1], (s.gcg_swaps,), generator=gen)]
            trials = cur.repeat(s.gcg_swaps, 1)
            trials[torch.arange(s.gcg_swaps), slot] = pick
            losses = loss_of(trials)
            j = int(losses.argmin())
            if float(losses[j]) < best:
                best, cur = float(losses[j]), trials[j]
        out.append(Candidate(" ".join(model.vocabulary[int(v)] for v in cur), "inversion:gcg"))
        out.extend(Candidate(model.vocabulary[int(v)], "inversion:gradient")
                   for v in scores[0].topk(max(1, s.per_label - 1)).indices)
    return dedupe(out), V


# ---- black-box -------------------------------------------------------------------------------------------

def _screen(model: ClassifierModel, inputs: Inputs, proba0: np.ndarray, words: Sequence[str],
            s: InvertSettings) -> tuple[np.ndarray, str]:
    """[len(words), n_labels]: mean probability of label c over inputs not predicted c, trigger inserted.

    Rows not reached before the budget ran out stay NaN.
    """
    labels = model.labels
    sets = [_most_confident(proba0, c, s.screen_inputs) for c in range(len(labels))]
    screen = np.unique(np.concatenate(sets)).astype(int)
    member = np.array([[i in set(st.tolist()) for i in screen] for st in sets])  # [C, S]
    out = np.full((len(words), len(labels)), np.nan)
    per_call = max(1, 4096 // max(len(screen), 1))
    for g in range(0, len(words), per_call):
        chunk = words[g:g + per_call]
        texts = [insert(inputs.texts[i], w, POSITIONS[(k + j) % len(POSITIONS)])
                 for k, w in enumerate(chunk) for j, i in enumerate(screen)]
        try:
            proba = model.predict_proba(texts).reshape(len(chunk), len(screen), len(labels))
        except BudgetExhausted as e:
            return out, str(e)
        for c in range(len(labels)):
            if member[c].any():
                out[g:g + len(chunk), c] = proba[:, member[c], c].mean(axis=1)
    return out, ""


def propose_blackbox(model: ClassifierModel, inputs: Inputs, proba0: np.ndarray, vocabulary: Sequence[str],
                     s: InvertSettings) -> tuple[list[Candidate], int, str]:
    """Rank vocabulary words by how far each pushes clean inputs to a label; beam-grow if length > 1."""
    words = [w for w in dict.fromkeys(vocabulary) if w.strip() and not (w.startswith("<") and w.endswith(">"))]
    words = words[: s.max_vocab]
    scores, why = _screen(model, inputs, proba0, words, s)
    out: list[Candidate] = []
    beams: list[list[str]] = []
    for c in range(len(model.labels)):
        col = np.nan_to_num(scores[:, c], nan=-1.0)
        order = np.argsort(-col, kind="stable")[: max(s.per_label, s.beam)]
        out.extend(Candidate(words[i], "inversion:black-box") for i in order[: s.per_label])
        beams.append([words[i] for i in order[: s.beam]])
    for c, beam in enumerate(beams):
        for _ in range(1, s.length):
            if why:
                break
            grown = [f"{b} {w}" for b in beam for w in beam if w != b]
            sc, why = _screen(model, inputs, proba0, grown, s)
            col = np.nan_to_num(sc[:, c], nan=-1.0)
            order = np.argsort(-col, kind="stable")[: s.beam]
            beam = [grown[i] for i in order]
            out.extend(Candidate(g, "inversion:beam") for g in beam[:2])
    return dedupe(out), len(words), why
