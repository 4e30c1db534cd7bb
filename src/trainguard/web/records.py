"""Read queued rows back from the gated file, each checked against its ledger leaf.

A page of the review queue needs a few dozen rows out of a file that may hold
millions. For plain JSONL the reader builds a byte-offset index once per file
version (path, size, mtime) and seeks; other formats are read in one pass that
stops after the last wanted row. A row whose bytes no longer hash to the leaf
recorded by the gate is not shown: the reviewer must not judge different text
from the text that was gated.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from trainguard.errors import TrainguardError
from trainguard.io.readers import detect_format
from trainguard.ledger.hashing import canonical_row, iter_jsonl_raw, leaf_hash

INDEX_CACHE = 8  # files whose offset index is kept in memory


class RecordReader:
    def __init__(self, base_dirs: list[Path]) -> None:
        self.base_dirs = base_dirs
        self._index: OrderedDict[tuple[str, int, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def resolve(self, path: str) -> Path | None:
        """The gated file: as recorded, else relative to the server's or the ledger's folders."""
        p = Path(path)
        if p.is_absolute():
            return p if p.exists() else None
        for base in [Path.cwd(), *self.base_dirs]:
            if (base / p).exists():
                return base / p
        return None

    def read(self, path: str, wanted: dict[int, str]) -> dict[int, tuple[Any, str]]:
        """{row: (record or None, status)} for rows {row: leaf hex}; status is "ok" or why not."""
        if not wanted:
            return {}
        p = self.resolve(path)
        if p is None:
            return {r: (None, f"{path} is not found from the server's folder or the ledger's") for r in wanted}
        try:
            fmt = detect_format(p)
            if fmt == "jsonl" and not p.name.endswith(".gz"):
                found = self._seek_jsonl(p, wanted)
            elif fmt == "jsonl":
                found = self._scan_jsonl(p, wanted)
            else:
                found = self._scan_other(p, wanted)
        except (OSError, TrainguardError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            return {r: (None, f"cannot read {p}: {why}") for r in wanted}
        return {r: found.get(r, (None, "row not found in the file")) for r in wanted}

    # --- plain JSONL: offset index ----------------------------------------------------------------

    def _offsets(self, p: Path) -> np.ndarray:
        st = p.stat()
        key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
        with self._lock:
            if key in self._index:
                self._index.move_to_end(key)
                return self._index[key]
        starts = []
        pos = 0
        with open(p, "rb") as f:
            for raw in f:
                if raw.strip():
                    starts.append(pos)
                pos += len(raw)
        arr = np.asarray(starts, dtype=np.int64)
        with self._lock:
            self._index[key] = arr
            while len(self._index) > INDEX_CACHE:
                self._index.popitem(last=False)
        return arr

    def _seek_jsonl(self, p: Path, wanted: dict[int, str]) -> dict[int, tuple[Any, str]]:
        offsets = self._offsets(p)
        out = {}
        with open(p, "rb") as f:
            for row in sorted(wanted):
                if not 0 <= row < len(offsets):
                    continue
                f.seek(int(offsets[row]))
                line = f.readline()
                line = line[:-1] if line.endswith(b"\n") else line
                line = line[:-1] if line.endswith(b"\r") else line
                out[row] = _checked_json(line, wanted[row])
        return out

    def _scan_jsonl(self, p: Path, wanted: dict[int, str]) -> dict[int, tuple[Any, str]]:
        out, last = {}, max(wanted)
        for row, line, _ in iter_jsonl_raw(p):
            if row in wanted:
                out[row] = _checked_json(line, wanted[row])
            if row >= last:
                break
        return out

    def _scan_other(self, p: Path, wanted: dict[int, str]) -> dict[int, tuple[Any, str]]:
        from trainguard.io.readers import read

        out, last = {}, max(wanted)
        for item in read(p):
            if item.row in wanted and item.value is not None:
                ok = leaf_hash(canonical_row(item.value)).hex() == wanted[item.row]
                out[item.row] = (item.value, "ok") if ok else (None, CHANGED)
            if item.row >= last:
                break
        return out


CHANGED = "the record at this row changed since the gate ran; it is not shown"


def _checked_json(line: bytes, leaf_hex: str) -> tuple[Any, str]:
    if leaf_hash(line).hex() != leaf_hex:
        return None, CHANGED
    text = line.decode("utf-8", "replace")
    try:
        return json.loads(text), "ok"
    except ValueError:
        return text, "ok"
