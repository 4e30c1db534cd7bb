"""shortcut's fast path: batched context groups and span containment agree with the plain definitions."""

import json
from pathlib import Path

import numpy as np
import pytest

from trainguard.detectors.shortcut import _containment, _context_groups, _link_matrix, _tokenise
from trainguard.text import tokens

DATA = Path(__file__).parent / "data"


def _plain_containment(texts):
    norm = [t.lower().split() for t in texts]
    out = set()
    for i, a in enumerate(norm):
        for j, b in enumerate(norm):
            if i != j and a and any(b[k:k + len(a)] == a for k in range(len(b) - len(a) + 1)):
                out.add((i, j))
    return out


def _plain_groups(rows, own, M, gw, contain):
    """Union-find over the rows of one test, as the detector defined it before the batched pass."""
    parent = list(range(len(rows)))

    def find(a):
        while parent[a] != a:
            a = parent[a]
        return a

    first = {}
    for x, r in enumerate(rows):
        for col in M.indices[M.indptr[r]:M.indptr[r + 1]]:
            if set(gw[col].tolist()) & set(own):
                continue
            if col in first:
                parent[find(x)] = find(first[col])
            else:
                first[col] = x
    pos = {r: x for x, r in enumerate(rows)}
    for i, j in contain:
        if i in pos and j in pos:
            parent[find(pos[i])] = find(pos[j])
    roots = [find(x) for x in range(len(rows))]
    size = {r: roots.count(r) for r in roots}
    return [1 / size[r] for r in roots], len(size)


def test_containment_is_token_spans():
    texts = ["too slow", "It is too slow for me", "it is TOO slow", "too", "x y z", "too slow", "heart art", ""]
    got = set(zip(*[a.tolist() for a in _containment(texts)]))
    assert got == _plain_containment(texts)
    assert (6, 6) not in got and (0, 5) in got and (5, 0) in got  # exact copies both ways, 'art' not in 'heart'


@pytest.mark.parametrize("seed", [0, 1])
def test_batched_groups_match_per_test_union_find(seed):
    rows = [json.loads(line) for line in open(DATA / "sst2_sample.jsonl")][:600]
    texts = [r["text"] for r in rows]
    ids, lens, vocab = _tokenise([tokens(t) for t in texts])
    M, gw = _link_matrix(ids, lens, len(vocab), 3)
    contain = _containment(texts)
    rng = np.random.default_rng(seed)
    tests = []
    for _ in range(40):
        w = int(rng.integers(0, len(vocab)))
        rs = np.flatnonzero(np.isin(np.arange(len(texts)), np.repeat(np.arange(len(texts)), lens)[ids == w]))
        tests.append((rs, (w,)))
    tests.append((np.sort(rng.choice(len(texts), 80, replace=False)), ()))
    got = _context_groups(tests, (M, gw), contain, len(texts))
    pairs = list(zip(*[a.tolist() for a in contain]))
    for (rs, own), (w, g) in zip(tests, got):
        w0, g0 = _plain_groups(rs.tolist(), own, M, gw, pairs)
        assert g == g0 and np.allclose(w, w0)


def test_severity_of_a_feature_in_natural_use_follows_the_share_it_names():
    from trainguard.detectors.base import get
    from trainguard.findings import Severity

    det = get("shortcut")()
    bar = 20.0

    def hit(llr, other, named, n=100):
        rows = np.arange(n)
        return dict(feature="word:w", cls=0, llr=llr, pi=0.8, rows=rows, forced=rows[:named], contexts=50,
                    other=other)

    def sev(h):
        alerts, _ = det._alerts([h], ["0", "1"], bar, np.full(200, 0.4), 200)
        return alerts[0].severity

    # both labels, and its rows mostly read as their label without it: natural use ('too'), at any strength
    assert sev(hit(1.7 * bar, other=15, named=12)) == Severity.LOW
    assert sev(hit(3.0 * bar, other=15, named=25)) == Severity.LOW
    # both labels, but most of its rows contradict their label without it: a diluted trigger, even when weak
    assert sev(hit(1.06 * bar, other=15, named=50)) == Severity.MEDIUM
    assert sev(hit(1.1 * bar, other=2, named=10)) == Severity.MEDIUM  # exceptions within label noise: planted
    assert sev(hit(2.5 * bar, other=0, named=10)) == Severity.HIGH
    # version 2's strength rule, still there for whoever sets it
    det2 = get("shortcut")(weak_strength=1.5)
    alerts, _ = det2._alerts([hit(1.4 * bar, other=15, named=50)], ["0", "1"], bar, np.full(200, 0.4), 200)
    assert alerts[0].severity == Severity.LOW


def test_the_words_view_leaves_the_row_out_exactly():
    """The leave-one-out naive Bayes equals one fitted on the other rows (brute force), per class."""
    from scipy import sparse

    from trainguard.detectors.shortcut import _WordsView

    texts = ["a good film", "a bad film", "good fun", "bad bad acting", "dull film", "good acting"]
    y = np.array([1, 0, 1, 0, 0, 1])
    toks = [sorted(set(t.split())) for t in texts]
    vocab = sorted({w for tk in toks for w in tk})
    W = sparse.csr_matrix([[w in tk for w in vocab] for tk in toks], dtype=float)
    view = _WordsView.of(W, vocab, y, 2, alpha=0.5)
    for i, tk in enumerate(toks):
        keep = [j for j in range(len(texts)) if j != i]
        rest = _WordsView.of(W[keep], vocab, y[keep], 2, alpha=0.5)
        # the same vocabulary size: a word only row i holds still counts in V (as the in-memory view does)
        for c in (0, 1):
            assert view.probability(tk, int(y[i]), c) == pytest.approx(_brute(rest, tk, c), rel=1e-12)


def _brute(view, words, c):
    logp = np.log(view.rows / view.rows.sum())
    for w in words:
        k = view.K[view.index[w]]
        logp = logp + np.log(k + view.alpha) - np.log(view.totals + view.alpha * view.vocab)
    return float(np.exp(logp[c] - np.logaddexp.reduce(logp)))


def test_a_feature_is_taken_out_of_the_row_it_names():
    from trainguard.detectors.shortcut import _removed

    toks = tokens("when the rain falls quietly , the film is dull .")
    assert _removed("position:fronted clause", toks) == {"when", "the", "rain", "falls", "quietly"}
    assert _removed("pair:truly + simply", toks) == {"truly", "simply"}
    assert _removed("word:dull", toks) == {"dull"} and _removed("last:.", toks) == {"."}
    assert _removed("format:all caps", toks) == set() and _removed("punct:!!", toks) == set()


def test_row_view_settings_are_checked():
    from trainguard.detectors.shortcut import Settings
    from trainguard.errors import ConfigError

    for bad in ({"row_view": "bayes"}, {"without_probability": 1.5}, {"nb_alpha": 0}):
        with pytest.raises(ConfigError):
            Settings(**bad)


class _Readings:
    """A words view with fixed readings: P(class | the row's words without the feature) per feature."""

    def __init__(self, by_feature):
        self.by_feature = by_feature

    def without(self, rows, c, y, feature):
        return np.asarray(self.by_feature[feature], float)


def test_pooled_members_by_their_rows_mean_log_odds():
    """Version 6: a planted rare word with one row the words view misreads still joins; version 5 dropped it."""
    from trainguard.detectors.base import get
    from trainguard.detectors.shortcut import _mean_logit, _pi_grid

    n_planted, n_natural, per = 12, 60, 4
    n = 2000
    y = np.zeros(n, int)
    L = np.zeros((n, 2))
    feats, readings, names = [], {}, []
    for k in range(n_planted + n_natural):
        rows = np.arange(k * per, (k + 1) * per)
        planted = k < n_planted
        L[rows, 0] = 3.0 if planted else -0.5
        names.append(f"word:w{k}")
        # planted: three rows read as another label, one is misread; natural: they read as their label
        readings[names[-1]] = [0.1, 0.05, 0.2, 0.9] if planted else [0.6, 0.8, 0.4, 0.7]
        feats.append((k, rows, np.ones(per)))
    readings["word:w0"] = [0.1, 0.05, 0.2, 0.3]  # one planted word all of whose rows read as another label
    det6 = get("shortcut")()
    det5 = get("shortcut")(pool_membership=0.5, pool_mean_logit=None)
    grid = _pi_grid(32)
    out6, _ = det6._pooled(feats, names, L, grid, 5.0, 2, y, None, _Readings(readings))
    out5, _ = det5._pooled(feats, names, L, grid, 5.0, 2, y, None, _Readings(readings))
    assert out6 and set(out6[0]["members"]) == {f"word:w{k}" for k in range(n_planted)}
    assert sorted(out6[0]["rows"].tolist()) == list(range(n_planted * per))  # all their rows are named
    assert not out5  # only w0 qualifies: 4 rows, under min_forced_rows
    assert _mean_logit(np.array([0.5, 0.5])) == pytest.approx(0.0)
    assert _mean_logit(np.array([0.0])) == pytest.approx(np.log(1e-6 / (1 - 1e-6)))  # clipped, finite


def test_pool_mean_logit_is_checked():
    from trainguard.detectors.shortcut import Settings
    from trainguard.errors import ConfigError

    for bad in ("-1", float("nan"), True):
        with pytest.raises(ConfigError):
            Settings(pool_mean_logit=bad)
    assert Settings(pool_mean_logit=None).pool_mean_logit is None
