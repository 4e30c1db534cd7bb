"""Development runs behind `shortcut` v3-v5 (issue 12): what each rule was chosen on, before its freeze.

Every run is on the development instances of bench_shortcut.py (DEV, DEV2: sample seeds 0, 5, 6) and clean
development samples, never on a fresh set. Earlier versions are recreated through settings:
V3 = the words view with v2's severity and pooling; ridge = v2's row rule (the embedding ridge).

    python benchmarks/bench_shortcut_dev.py rows    # v3: ridge vs the words view at 0.4 / 0.5 (DEV + DEV2, 0.5 % and 0.1 %)
    python benchmarks/bench_shortcut_dev.py share   # v4: share of a feature's rows named, planted vs natural (v3 rules)
    python benchmarks/bench_shortcut_dev.py pool    # v5: pooled membership variants (rare words, syntactic, combo)
    python benchmarks/bench_shortcut_dev.py pool6   # v6: members by their rows' mean log-odds (more dev files)
    python benchmarks/bench_shortcut_dev.py grid    # v6: the membership rules it was chosen among, per candidate

Output: one line per file (recall / precision at >= medium, or each finding's share); saved runs in
results/shortcut-dev-{rows,share,pool,pool6,grid}.txt.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_shortcut as B  # noqa: E402

from trainguard.attacks import poison  # noqa: E402
from trainguard.io.dataset import load  # noqa: E402
from trainguard.scan import scan  # noqa: E402

V2_SEVERITY_AND_POOL = {"weak_strength": 1.5, "natural_share": 0.0, "pool_membership": 0.9, "pool_all_rows": False}
MODES = {
    "rows": {"ridge": {**V2_SEVERITY_AND_POOL, "row_view": "ridge"},
             "wo.4": {**V2_SEVERITY_AND_POOL, "without_probability": 0.4},
             "wo.5": {**V2_SEVERITY_AND_POOL, "without_probability": 0.5}},
    "pool": {"v4": {"pool_membership": 0.9, "pool_all_rows": False},
             "all.5": {"pool_membership": 0.5, "pool_min_rows": 3, "pool_mean_logit": None},
             "all.2": {"pool_membership": 0.2, "pool_min_rows": 3, "pool_mean_logit": None},
             "all-but-1.5": {"pool_membership": 0.5, "pool_min_rows": 3, "pool_mean_logit": None, "pool_exceptions": 1},
             "all-but-1.2": {"pool_membership": 0.2, "pool_min_rows": 3, "pool_mean_logit": None, "pool_exceptions": 1}},
    # v6's rule was chosen from the pooled candidates' readings on these files (resp 0.2-0.5 x mean log-odds
    # -0.7 to -2, and medians, clipped means, second-largest probabilities): these are its neighbours.
    "pool6": {"v5": {"pool_membership": 0.5, "pool_mean_logit": None},
              "v6": {},
              "mean-1.3": {"pool_mean_logit": -1.3},
              "mean-.7": {"pool_mean_logit": -0.7},
              "resp.5": {"pool_membership": 0.5}},
}
POOL_FILES = [("rare-words", {"salt": 0}, 0), ("rare-words", {"salt": 1}, 5), ("syntactic", {"salt": 1}, 5),
              ("combo", {"words": ("very", "still"), "factor": 1.0}, 5)]
POOL6_FILES = POOL_FILES + [("rare-words", {"salt": 2}, 6), ("rare-words", {"salt": 3}, 8),
                            ("rare-words", {"salt": 4}, 10), ("syntactic", {"salt": 0}, 0),
                            ("syntactic", {"salt": 2}, 6), ("syntactic", {"salt": 3}, 8), ("format", {"format": "caps"}, 8)]


def _planted(sst2, shape, inst, seed, rate):
    params = B.params_for(shape, inst, rate)
    r = poison(B._sample(sst2, 20000, seed), shape, count=round(rate * 20000 * (1 + float(params.get("factor", 0.0)))),
               seed=seed, **params)
    poisoned = {e["row"] for e in r.entries if e.get("role", "poison") == "poison"}
    helpers = {e["row"] for e in r.entries if e.get("role") == "helper"}
    return r.rows, poisoned, helpers


def _share_lines(tag, rep, poisoned):
    for f in rep.findings:
        ev = f.evidence
        rows, other = ev["rows_with_feature"], ev["rows_with_feature_other_label"]
        named = len(f.rows)
        kind = "PLANTED" if len(set(f.rows) & poisoned) > 0.5 * named else "natural"
        print(f"{tag} {kind} {f.severity} {ev['feature']} strength {ev['llr'] / ev['threshold_llr']:.2f} rows {rows} "
              f"other {other} named {named} share {named / max(rows - other, 1):.2f} "
              f"both-labels {other > 0.02 * rows}", flush=True)


def _candidates(data, poisoned):
    """Every rare feature the pooled test weighs (3+ rows, all of one class), with its responsibility and its rows'
    readings without it, for a class whose pooled test passes: membership at 0 and every mean log-odds let in."""
    import numpy as np

    import trainguard.detectors.shortcut as S

    seen: dict = {}
    orig_pooled, orig_resp, orig_without = S.Shortcut._pooled, S._responsibility, S._RowView.without

    def pooled(self, feats, fnames, *a):
        seen.update(feats=feats, fnames=fnames, resp=[], active=True)
        try:
            return orig_pooled(self, feats, fnames, *a)
        finally:
            seen["active"] = False

    def resp(lr, pi):
        out = orig_resp(lr, pi)
        if seen.get("active") and len(lr) == len(seen["feats"]):
            seen["resp"].append(out)
        return out

    def without(self, rows, c, y, feature):
        out = orig_without(self, rows, c, y, feature)
        if seen.get("active"):
            seen.setdefault("p", {})[feature] = (rows.tolist(), out.tolist())
        return out

    S.Shortcut._pooled, S._responsibility, S._RowView.without = pooled, resp, without
    try:
        scan(data, ["shortcut"], settings={"shortcut": {"pool_membership": 0.0, "pool_mean_logit": 1e9}})
    finally:
        S.Shortcut._pooled, S._responsibility, S._RowView.without = orig_pooled, orig_resp, orig_without
    rs = np.max(seen["resp"], axis=0) if seen.get("resp") else []  # one passing class per file here
    out = []
    for (f, _, _), r in zip(seen.get("feats", []) or [], rs):
        name = seen["fnames"][f]
        if name in seen.get("p", {}):
            rows, p = seen["p"][name]
            out.append((name, float(r), np.array(p), sum(x in poisoned for x in rows) > len(rows) / 2, rows))
    return out


def _grid(cands, npois):
    """Recall / precision of the pooled finding under each membership rule (all of a member's rows named)."""
    import numpy as np

    def lg(p, a=1e-6):
        p = np.clip(p, a, 1 - a)
        return np.log(p / (1 - p))

    rules = {f"resp>={r} mean<={m}": (lambda d, r=r, m=m: d[1] >= r and lg(d[2]).mean() <= m)
             for r in (0.2, 0.3, 0.4, 0.5) for m in (-0.7, -1.0, -1.3)}
    rules.update({f"resp>=0.3 clip{a} mean<={m}": (lambda d, a=a, m=m: d[1] >= 0.3 and lg(d[2], a).mean() <= m)
                  for a in (0.01, 0.05) for m in (-0.7, -1.0)})
    rules.update({f"resp>=0.3 median<={m}": (lambda d, m=m: d[1] >= 0.3 and np.median(lg(d[2])) <= m)
                  for m in (-0.5, -1.0)})
    rules["v5: resp>=0.5 all<=0.5"] = lambda d: d[1] >= 0.5 and bool(np.all(d[2] <= 0.5))
    out = []
    for name, rule in rules.items():
        tp, fp = set(), set()
        for d in cands:
            if rule(d):
                (tp if d[3] else fp).update(d[4])
        out.append(f"{name} {len(tp) / max(npois, 1):.2f}/{len(tp) / max(len(tp) + len(fp), 1):.2f}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=("rows", "share", "pool", "pool6", "grid"))
    a = ap.parse_args()
    sst2 = B._jsonl(B.SHARED / "sst2" / "train.jsonl.gz")
    with tempfile.TemporaryDirectory() as td:
        if a.mode == "share":
            v3 = {"shortcut": V2_SEVERITY_AND_POOL}
            for shape, inst, seed in B.DEV + B.DEV2:
                for rate in B.RATES:
                    rows, poisoned, _ = _planted(sst2, shape, inst, seed, rate)
                    _share_lines(f"{shape}/{rate}/{seed}", scan(load(B._write(rows, td)), ["shortcut"], settings=v3),
                                 poisoned)
            for n, seeds in ((20000, range(10)), (40000, (7, 8, 9)), (len(sst2), (None,))):
                for seed in seeds:
                    rows = sst2 if seed is None else B._sample(sst2, n, seed)
                    rep = scan(load(B._write(rows, td)), ["shortcut"], settings=v3)
                    _share_lines(f"clean{n // 1000}k/{seed}", rep, set())
            return 0
        if a.mode == "grid":
            for shape, inst, seed in POOL6_FILES:
                rows, poisoned, _ = _planted(sst2, shape, inst, seed, 0.005)
                cands = _candidates(load(B._write(rows, td)), poisoned)
                print(" | ".join([shape, str(inst), str(seed)] + _grid(cands, len(poisoned))), flush=True)
            return 0
        variants = MODES[a.mode]
        files = {"rows": [(s, i, seed) for s, i, seed in B.DEV + B.DEV2], "pool": POOL_FILES, "pool6": POOL6_FILES}[a.mode]
        for shape, inst, seed in files:
            for rate in B.RATES:
                rows, poisoned, helpers = _planted(sst2, shape, inst, seed, rate)
                data = load(B._write(rows, td))
                line = [shape, str(inst), str(seed), str(rate)]
                for name, st in variants.items():
                    sc = B._score(B._named(scan(data, ["shortcut"], settings={"shortcut": st})), poisoned, helpers)
                    prec = "-" if sc["precision"] is None else f"{sc['precision']:.2f}"
                    line.append(f"{name} {sc['recall']:.2f}/{prec} n={sc['named']}")
                print(" | ".join(line), flush=True)
        for seed in (0, 1, 2, 5, 7, 9) + ((11, 12, 13) if a.mode == "pool6" else ()):
            data = load(B._write(B._sample(sst2, 20000, seed), td))
            line = [f"clean 20k {seed}"]
            for name, st in variants.items():
                rep = scan(data, ["shortcut"], settings={"shortcut": st})
                line.append(f"{name} " + "; ".join(f"{f.severity} {f.evidence.get('feature')} ({len(f.rows)})"
                                                   for f in rep.findings))
            print(" | ".join(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
