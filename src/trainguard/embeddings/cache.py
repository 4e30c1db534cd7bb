"""On-disk embedding cache: SQLite, keyed by (backend key, SHA-256 of the text).

Keyed by the text, not the record id, so a relabelled or re-exported row
hits the cache, and a second scan of a grown dataset embeds only new texts.
Vectors are stored as raw little-endian float32 bytes with their dimension
and read back with `np.frombuffer`: nothing is ever unpickled. SQLite gives
atomic batched writes and safe concurrent readers (WAL) for free.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from trainguard.errors import ConfigError

SCHEMA_VERSION = 1
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
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS vectors (model TEXT NOT NULL, hash BLOB NOT NULL, "
                "dim INTEGER NOT NULL, vec BLOB NOT NULL, PRIMARY KEY (model, hash)) WITHOUT ROWID")
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                self._db.commit()
            elif row[0] != str(SCHEMA_VERSION):
                raise ConfigError(f"embedding cache {self.directory}: schema {row[0]}, expected "
                                  f"{SCHEMA_VERSION}; delete the folder or pick another --cache-dir")
        except (OSError, sqlite3.Error) as e:
            raise ConfigError(f"embedding cache {self.directory}: cannot open ({e})") from e

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "EmbeddingCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, model: str, hashes: Sequence[bytes], dim: int) -> dict[bytes, np.ndarray]:
        """The cached vectors among `hashes`; entries of another dimension are ignored."""
        found: dict[bytes, np.ndarray] = {}
        for a in range(0, len(hashes), _LOOKUP_CHUNK):
            chunk = list(hashes[a : a + _LOOKUP_CHUNK])
            marks = ",".join("?" * len(chunk))
            for h, d, vec in self._db.execute(
                f"SELECT hash, dim, vec FROM vectors WHERE model=? AND hash IN ({marks})", [model, *chunk]
            ):
                if d == dim and len(vec) == 4 * dim:
                    found[bytes(h)] = np.frombuffer(vec, dtype="<f4")
        return found

    def put(self, model: str, items: Iterable[tuple[bytes, np.ndarray]]) -> None:
        rows = [(model, h, int(v.shape[0]), np.ascontiguousarray(v, dtype="<f4").tobytes()) for h, v in items]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)", rows)

    def count(self, model: str | None = None) -> int:
        if model is None:
            return self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM vectors WHERE model=?", (model,)).fetchone()[0]
