"""Record-level diff between a recorded version and a file, by identity and order.

Semantics (old = the ledger version's leaves, new = the file's leaves):
1. The common prefix and suffix (same leaf at the same distance from the start
   or the end) are unchanged.
2. In the middle, records are matched by content: the k-th occurrence of a
   leaf in old is matched with its k-th occurrence in new.
3. Unmatched rows are paired as *modified* when they sit in the same gap, i.e.
   the same number of matched rows precede them in old and in new (the j-th
   unmatched old row of a gap pairs with the j-th unmatched new row of that
   gap). So an edited record is reported as modified, not deleted + inserted.
   Left-over unmatched rows are *deleted* (old rows) or *inserted* (new rows).
4. A matched record is *moved* when its rank among the matched records differs
   between old and new (position once insertions and deletions are discounted).
   A swap of rows i and j reports exactly rows i and j; moving one record from
   row 2 to row 7 reports rows 2-7, since each of them changed position.
   `reordered` is true when anything moved.

Rows are 0-based record positions: inserted, modified and moved rows are rows of
the file; deleted rows (and `modified_from`, `moved_from`) are rows of the
ledger version. Everything is vectorised (numpy) over the 32-byte leaves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Diff:
    inserted: list[int] = field(default_factory=list)
    modified: list[int] = field(default_factory=list)
    modified_from: list[int] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)
    moved: list[int] = field(default_factory=list)
    moved_from: list[int] = field(default_factory=list)

    @property
    def reordered(self) -> bool:
        return bool(self.moved)

    @property
    def ok(self) -> bool:
        return not (self.inserted or self.modified or self.deleted or self.moved)

    def to_dict(self) -> dict:
        return {
            "inserted": self.inserted, "modified": self.modified, "deleted": self.deleted,
            "reordered": self.reordered, "moved": self.moved, "moved_from": self.moved_from,
            "modified_from": self.modified_from, "ok": self.ok,
        }


def as_words(leaves: bytes) -> np.ndarray:
    """Packed leaves as an (n, 4) uint64 array (big-endian, so order = byte order)."""
    return np.frombuffer(leaves, dtype=">u8").reshape(-1, 4)


def diff(old: bytes, new: bytes) -> Diff:
    a, b = as_words(old), as_words(new)
    m, n = len(a), len(b)
    k = min(m, n)
    neq = np.any(a[:k] != b[:k], axis=1)
    pre = int(np.argmax(neq)) if neq.any() else k
    if pre == m == n:
        return Diff()
    rest = min(m, n) - pre
    if rest:
        neq_tail = np.any(a[m - rest:][::-1] != b[n - rest:][::-1], axis=1)
        suf = int(np.argmax(neq_tail)) if neq_tail.any() else rest
    else:
        suf = 0
    fast = _in_place_edits(a[pre:m - suf], b[pre:n - suf], pre)
    return fast if fast is not None else _middle(a[pre:m - suf], b[pre:n - suf], pre)


def _in_place_edits(a: np.ndarray, b: np.ndarray, offset: int) -> Diff | None:
    """Same length, and the differing rows' leaves occur nowhere on the other side.

    Then the general algorithm pairs each differing row with the row at the same
    position (same gap, nothing moves), so the answer is those rows, modified,
    without sorting the whole middle. None when the shortcut does not apply.
    """
    if len(a) != len(b) or len(a) == 0:
        return None
    rows = np.flatnonzero(np.any(a != b, axis=1))
    if len(rows) > max(64, len(a) // 100):
        return None
    a0, b0 = np.sort(a[:, 0]), np.sort(b[:, 0])
    if _contains(b0, a[rows, 0]) or _contains(a0, b[rows, 0]):
        return None  # a leaf reappears elsewhere: it may have moved
    out = (rows + offset).tolist()
    return Diff(modified=out, modified_from=out)


def _contains(sorted_words: np.ndarray, probes: np.ndarray) -> bool:
    """Whether any probe occurs in the sorted array (binary search, no set building)."""
    at = np.minimum(np.searchsorted(sorted_words, probes), len(sorted_words) - 1)
    return bool((sorted_words[at] == probes).any())


def _match(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (ia, ib): the k-th occurrence of each leaf in a with its k-th in b."""
    m, n = len(a), len(b)
    if m == 0 or n == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    keys = np.concatenate([a, b])
    tag = np.concatenate([np.zeros(m, np.int8), np.ones(n, np.int8)])
    pos = np.concatenate([np.arange(m), np.arange(n)])
    # Sort on the first 64 bits only; fall back to all 256 when two different
    # leaves share them (only a crafted partial collision does that).
    order = np.lexsort((pos, tag, keys[:, 0]))
    sk = keys[order]
    same_word = sk[1:, 0] == sk[:-1, 0]
    full_diff = np.any(sk[1:] != sk[:-1], axis=1)
    if np.any(same_word & full_diff):
        order = np.lexsort((pos, tag, keys[:, 3], keys[:, 2], keys[:, 1], keys[:, 0]))
        sk = keys[order]
        full_diff = np.any(sk[1:] != sk[:-1], axis=1)
    new_group = np.ones(len(order), dtype=bool)
    new_group[1:] = full_diff
    gid = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    st = tag[order]
    count_a = np.bincount(gid, weights=(st == 0)).astype(np.int64)
    count_b = np.bincount(gid, weights=(st == 1)).astype(np.int64)
    idx = np.arange(len(order))
    within = idx - starts[gid]
    sel = (st == 0) & (within < count_b[gid])
    ia = pos[order[sel]]
    partner = starts[gid[sel]] + count_a[gid[sel]] + within[sel]
    ib = pos[order[partner]]
    return ia, ib


def _gap_rank(mask: np.ndarray) -> np.ndarray:
    """For each row: how many matched rows precede it."""
    c = np.cumsum(mask)
    return c - mask


def _middle(a: np.ndarray, b: np.ndarray, offset: int) -> Diff:
    m, n = len(a), len(b)
    ia, ib = _match(a, b)
    ma = np.zeros(m, dtype=bool)
    mb = np.zeros(n, dtype=bool)
    ma[ia] = True
    mb[ib] = True
    gap_a, gap_b = _gap_rank(ma), _gap_rank(mb)
    ua, ub = np.flatnonzero(~ma), np.flatnonzero(~mb)
    ka = _gap_keys(gap_a[ua], n + m + 1)
    kb = _gap_keys(gap_b[ub], n + m + 1)
    _, pa, pb = np.intersect1d(ka, kb, assume_unique=True, return_indices=True)
    mod_a, mod_b = ua[pa], ub[pb]
    del_mask = np.ones(len(ua), dtype=bool)
    del_mask[pa] = False
    ins_mask = np.ones(len(ub), dtype=bool)
    ins_mask[pb] = False
    order = np.argsort(mod_b, kind="stable")
    # moved: rank among matched rows differs between old and new
    rank_a = (np.cumsum(ma) - 1)[ia]
    rank_b = (np.cumsum(mb) - 1)[ib]
    mv = rank_a != rank_b
    mv_order = np.argsort(ib[mv], kind="stable")
    return Diff(
        inserted=(ub[ins_mask] + offset).tolist(),
        modified=(mod_b[order] + offset).tolist(),
        modified_from=(mod_a[order] + offset).tolist(),
        deleted=(ua[del_mask] + offset).tolist(),
        moved=(ib[mv][mv_order] + offset).tolist(),
        moved_from=(ia[mv][mv_order] + offset).tolist(),
    )


def _gap_keys(gaps: np.ndarray, base: int) -> np.ndarray:
    """Unique key (gap, index within the gap) for rows sorted by position."""
    if len(gaps) == 0:
        return np.empty(0, np.int64)
    new = np.ones(len(gaps), dtype=bool)
    new[1:] = gaps[1:] != gaps[:-1]
    starts = np.flatnonzero(new)
    gid = np.cumsum(new) - 1
    within = np.arange(len(gaps)) - starts[gid]
    return gaps.astype(np.int64) * base + within
