"""verify's piece-by-piece path for in-place edits gives exactly the full diff's answer."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainguard.ledger import Ledger, hashing, ingest, store, verify
from trainguard.ledger import ops
from trainguard.ledger.diff import diff
from trainguard.ledger.hashing import hash_file

edits = st.lists(st.tuples(st.integers(0, 199), st.sampled_from(["edit", "copy-of-0", "swap-with-next"])),
                 max_size=6)


@given(n=st.integers(1, 200), changes=edits, chunk_pow=st.integers(0, 4))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_streamed_verify_equals_full_diff(tmp_path_factory, monkeypatch, n, changes, chunk_pow):
    monkeypatch.setattr(hashing, "CHUNK_LEAVES", 1 << chunk_pow)
    monkeypatch.setattr(store, "CHUNK_LEAVES", 1 << chunk_pow)
    tmp = tmp_path_factory.mktemp("v")
    lines = [f'{{"i": {i}}}' for i in range(n)]
    p = tmp / "d.jsonl"
    p.write_text("\n".join(lines) + "\n")
    with Ledger.open(tmp / "l.db") as led:
        ingest(led, p, by="t")
        new = list(lines)
        for row, kind in changes:
            r = row % n
            if kind == "edit":
                new[r] = new[r] + " "
            elif kind == "copy-of-0":
                new[r] = new[0]
            elif r + 1 < n:
                new[r], new[r + 1] = new[r + 1], new[r]
        p.write_text("\n".join(new) + "\n")
        got = verify(led, p)
        v = led.version("d.jsonl")
        want = diff(led.leaves(v["id"]), hash_file(p).leaves)
        assert got.diff == want
        assert got.ok == (new == lines)


def test_streamed_path_answers_in_place_edits_without_the_full_diff(tmp_path, monkeypatch):
    monkeypatch.setattr(hashing, "CHUNK_LEAVES", 8)
    monkeypatch.setattr(store, "CHUNK_LEAVES", 8)
    p = tmp_path / "d.jsonl"
    p.write_text("".join(f'{{"i": {i}}}\n' for i in range(100)))
    with Ledger.open(tmp_path / "l.db") as led:
        ingest(led, p, by="t")
        p.write_text("".join(f'{{"i": {i}}}\n' if i not in (3, 77) else '{"i": "x"}\n' for i in range(100)))
        monkeypatch.setattr(ops, "diff", lambda *a: (_ for _ in ()).throw(AssertionError("full diff ran")))
        res = verify(led, p)
    assert res.diff.modified == [3, 77] and not res.ok
