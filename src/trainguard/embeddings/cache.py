"""On-disk embedding cache: SQLite, keyed by (backend key, SHA-256 of the text).

Keyed by the text, not the record id, so a relabelled or re-exported row
hits the cache, and a second scan of a grown dataset embeds only new texts.
Vectors are stored as raw little-endian float32 bytes with their dimension
and read back with `np.frombuffer`: nothing is ever unpickled. SQLite gives
atomic batched writes and safe concurrent readers (WAL) for free.

Vectors live in a rowid table, not a WITHOUT ROWID one: there a row is an
index b-tree entry, whose in-page payload tops out near 1 KB on 4 KB pages, so
every 1-1.5 KB vector spilled onto an overflow page of its own (4.7 KB of disk
per vector). Schema 1 caches are migrated in place on open.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from trainguard.errors import ConfigError

SCHEMA_VERSION = 2
ENV_DIR = "TRAINGUARD_CACHE_DIR"
_LOOKUP_CHUNK = 900  # below SQLite's default host-parameter limit


def default_cache_dir() -> Path:
    """$TRAINGUARD_CACHE_DIR/embeddings, else $XDG_CACHE_HOME or ~/.cache /trainguard/embeddings."""
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR]).expanduser() / "embeddings"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "trainguard" / "embeddings"


def text_hash(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class EmbeddingCache:
    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.directory / "embeddings.sqlite3", timeout=60)
            self._db.execute("PRAGMA page_size=8192")  # new files only: 5 vectors a page, not 2 (1.7 vs 2.1 KB each)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is not None and row[0] not in ("1", str(SCHEMA_VERSION)):
                raise ConfigError(f"embedding cache {self.directory}: schema {row[0]}, expected "
                                  f"{SCHEMA_VERSION}; delete the folder or pick another --cache-dir")
            with self._db:
                self._db.execute("CREATE TABLE IF NOT EXISTS models (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE)")
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS vecs (model_id INTEGER NOT NULL REFERENCES models(id), "
                    "hash BLOB NOT NULL, dim INTEGER NOT NULL, vec BLOB NOT NULL)")
                self._db.execute("CREATE UNIQUE INDEX IF NOT EXISTS vecs_key ON vecs (model_id, hash)")
                if row is not None and row[0] == "1":
                    self._migrate_v1()
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            self._model_ids: dict[str, int] = {}
        except (OSError, sqlite3.Error) as e:
            raise ConfigError(f"embedding cache {self.directory}: cannot open ({e})") from e

    def _migrate_v1(self) -> None:
        self._db.execute("INSERT OR IGNORE INTO models (key) SELECT DISTINCT model FROM vectors")
        self._db.execute("INSERT OR REPLACE INTO vecs SELECT m.id, v.hash, v.dim, v.vec FROM vectors v "
                         "JOIN models m ON m.key = v.model")
        self._db.execute("DROP TABLE vectors")

    def _model_id(self, model: str, create: bool) -> int | None:
        if model not in self._model_ids:
            if create:  # OR IGNORE: another process may add the same backend key at once
                with self._db:
                    self._db.execute("INSERT OR IGNORE INTO models (key) VALUES (?)", (model,))
            row = self._db.execute("SELECT id FROM models WHERE key=?", (model,)).fetchone()
            if row is None:
                return None
            self._model_ids[model] = int(row[0])
        return self._model_ids[model]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "EmbeddingCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, model: str, hashes: Sequence[bytes], dim: int) -> dict[bytes, np.ndarray]:
        """The cached vectors among `hashes`; entries of another dimension are ignored."""
        return {h: np.frombuffer(vec, dtype="<f4") for h, vec in self._stored(model, hashes, dim)}

    def lookup(self, model: str, hashes: Sequence[bytes], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions in `hashes` found, their (k, dim) float32 vectors, read-only): `get` without a dict of
        arrays, for whole datasets (one `frombuffer` over the joined blobs instead of one array per row).
        `hashes` must be distinct (a repeated one is reported at its last position only)."""
        where = {h: i for i, h in enumerate(hashes)}
        pos, blobs = [], []
        for h, vec in self._stored(model, hashes, dim):
            pos.append(where[h])
            blobs.append(vec)
        vectors = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim)  # read-only view
        return np.asarray(pos, np.int64), vectors

    def _stored(self, model: str, hashes: Sequence[bytes], dim: int) -> Iterator[tuple[bytes, bytes]]:
        """(hash, raw vector) of the cached entries among `hashes` with this dimension, in chunks under
        SQLite's host-parameter limit."""
        mid = self._model_id(model, create=False)
        if mid is None:
            return
        for a in range(0, len(hashes), _LOOKUP_CHUNK):
            chunk = list(hashes[a : a + _LOOKUP_CHUNK])
            marks = ",".join("?" * len(chunk))
            for h, d, vec in self._db.execute(
                f"SELECT hash, dim, vec FROM vecs WHERE model_id=? AND hash IN ({marks})", [mid, *chunk]
            ):
                if d == dim and len(vec) == 4 * dim:
                    yield bytes(h), vec

    def put(self, model: str, items: Iterable[tuple[bytes, np.ndarray]]) -> None:
        mid = self._model_id(model, create=True)
        rows = [(mid, h, int(v.shape[0]), np.ascontiguousarray(v, dtype="<f4").tobytes()) for h, v in items]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO vecs VALUES (?, ?, ?, ?)", rows)

    def count(self, model: str | None = None) -> int:
        if model is None:
            return self._db.execute("SELECT COUNT(*) FROM vecs").fetchone()[0]
        mid = self._model_id(model, create=False)
        return 0 if mid is None else self._db.execute("SELECT COUNT(*) FROM vecs WHERE model_id=?", (mid,)).fetchone()[0]
