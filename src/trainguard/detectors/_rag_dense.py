"""Dense claim groups for `rag-poisoning` (opt-in, `claim_embedder`): padded PoisonedRAG passages on a sentence encoder.

The adaptive style (benchmarks/data/rag_claims: padded, varied, no shared opening, over 60 words) escapes the
wordllama claim groups but takes over a MiniLM retriever's top 5. On MiniLM vectors its passages are each other's
nearest neighbours, and so are honest per-disease answer sets (what is / symptoms / causes / treatment of one rare
disease). What this rule asks of a group beyond closeness:
- mutual 4-nearest-neighbour components of 4-8 passages (copies merged), mean cosine >= `_TIGHT`, no more than
  `_GAP` below each member's nearest outsider;
- a step: the median member's 4 nearest neighbours stand `claim_dense_step` above its 5th-8th (five passages
  written for one question, then the store);
- a claim of their own: the group's rarest shared word (its subject) is held by passages outside the group (the
  store's own answers on the subject), and at least `_CLAIM_WORDS` words held by 3/4 of the members are carried by
  at most `_OUTSIDE_SHARE` of those outside holders (an honest per-disease set holds all the passages on its subject,
  or shares only words its subject's other passages share too).
Chosen on the LLM-written dev set and simulator seed 0, checked on the earlier test set and seeds 1-2.
"""

from __future__ import annotations

import numpy as np

from trainguard.detectors.llm_rag import _components_of_edges, _knn, _neighbour_jaccard  # llm_rag imports this lazily

_MATES = 4  # mutual nearest neighbours
_TIGHT, _GAP = 0.68, -0.06
_CLAIM_WORDS, _OUTSIDE_SHARE = 3, 0.1
_K = 16  # neighbours read per passage


def dense_claim_groups(X: np.ndarray, content: list[np.ndarray], content_ragged, df: np.ndarray, step_min: float,
                       min_group: int, max_group: int, copy_jaccard: float) -> list[tuple[list[int], list[int], list[int]]]:
    """(sorted members, rows with their copies, shared claim-word ids) per group. `content`: per row its content-word
    ids; `df`: passages per word id."""
    n = len(X)
    if n <= max(min_group, 8):
        return []
    nbr, sim = _knn(X, min(_K, n - 1))
    jac = _neighbour_jaccard(content_ragged, nbr)
    rep = np.arange(n)
    for i in range(n):  # copies (near-identical vectors or wording) are one passage
        for j, c, wj in zip(nbr[i], sim[i], jac[i]):
            if j < i and (c >= 0.97 or wj >= copy_jaccard):
                rep[i] = min(rep[i], rep[j])
    nodes = np.flatnonzero(rep == np.arange(n))
    lists: dict[int, list[tuple[int, float]]] = {}
    step = np.zeros(n)
    for i in nodes.tolist():
        out, taken = [], {i}
        for j, c in zip(nbr[i].tolist(), sim[i].tolist()):
            r = int(rep[j])
            if r not in taken:
                taken.add(r)
                out.append((r, c))
        lists[i] = out
        if len(out) >= 8:
            cs = [c for _, c in out[:8]]
            step[i] = float(np.mean(cs[:4]) - np.mean(cs[4:8]))
    top = {i: {r for r, _ in lst[:_MATES]} for i, lst in lists.items()}
    edges = [(i, j) for i in lists for j in top[i] if j in top and i in top[j] and i < j]
    if not edges:
        return []
    lab = _components_of_edges(n, edges)
    comps: dict[int, list[int]] = {}
    for i in lists:
        comps.setdefault(int(lab[i]), []).append(i)
    cands = []
    for G in comps.values():
        if not min_group <= len(G) <= max_group:
            continue
        g = sorted(G)
        S = X[g] @ X[g].T
        inside = float(S[np.triu_indices(len(g), 1)].mean())
        outside = max(next((c for r, c in lists[j] if r not in G), 0.0) for j in g)
        if inside < _TIGHT or inside - outside < _GAP or np.median(step[g]) < step_min:
            continue
        ids, counts = np.unique(np.concatenate([content[j] for j in g]), return_counts=True)
        held = ids[4 * counts >= 3 * len(g)]
        subj = held[(df[held] >= 2) & (df[held] <= 0.02 * n)]
        if not len(subj):
            continue
        subject = int(subj[np.argmin(df[subj])])  # ties: the lowest id (first seen)
        cands.append((g, held, subject))
    if not cands:
        return []
    # passages holding each candidate subject (one pass over the rows)
    wanted = {s for _, _, s in cands}
    holders: dict[int, list[int]] = {s: [] for s in wanted}
    want = np.zeros(len(df), bool)
    want[list(wanted)] = True
    for i, ids in enumerate(content):
        for w in ids[want[ids]].tolist():
            holders[w].append(i)
    found = []
    for g, held, subject in cands:
        copies = sorted(int(x) for x in np.flatnonzero(np.isin(rep, g)))
        gs = set(g)
        out = [i for i in holders[subject] if i not in gs]  # a member's copies count as outside: they carry its words
        if not out:
            continue
        outside_ids, outside_counts = np.unique(np.concatenate([content[i] for i in out]), return_counts=True)
        carried = dict(zip(outside_ids.tolist(), outside_counts.tolist()))
        claim = [int(w) for w in held.tolist() if df[w] >= 2 and df[w] <= 0.05 * n
                 and carried.get(w, 0) <= _OUTSIDE_SHARE * len(out)]
        if len(claim) >= _CLAIM_WORDS:
            found.append((g, copies, claim))
    return found
