"""The typed record every detector sees, whatever file format it came from.

A record's id is a hash of its canonical content (not of the bytes on disk), so
the same example read from JSONL, CSV or Parquet gets the same id, and a
finding about it survives a re-export or a reordering of the file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Mapping


class Kind(StrEnum):
    """Dataset kinds; each detector declares which of these it serves."""

    CLASSIFICATION = "classification"
    INSTRUCTION = "instruction"
    PREFERENCE = "preference"
    DOCUMENTS = "documents"


_SEP = b"\x1f"


def _encode(value: str | None) -> bytes:
    # Length-prefixing makes the encoding injective: ("ab", "c") != ("a", "bc").
    if value is None:
        return b"-"
    raw = value.encode("utf-8", "surrogatepass")
    return str(len(raw)).encode() + b":" + raw


@dataclass(frozen=True, slots=True)
class Record:
    """One example. `text` is always the model's input side.

    classification: text + label; instruction: text (prompt) + response;
    preference: text (prompt) + chosen + rejected; documents: text (+ doc_id).
    `row` is the record's 0-based position in the file and `line` its source
    line: both locate it, neither is part of its content id.
    """

    row: int
    kind: Kind
    text: str
    label: str | None = None
    response: str | None = None
    chosen: str | None = None
    rejected: str | None = None
    doc_id: str | None = None
    source: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    id: str = field(default="", compare=False)
    # 1-based physical line the record starts on, when the reader knows it (JSONL, CSV/TSV); not content.
    line: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", content_id(self))

    @property
    def target(self) -> str | None:
        """What the model is trained to produce for `text`."""
        if self.kind is Kind.CLASSIFICATION:
            return self.label
        if self.kind is Kind.INSTRUCTION:
            return self.response
        if self.kind is Kind.PREFERENCE:
            return self.chosen
        return None

    def texts(self) -> list[str]:
        """Every free-text field, for detectors that look at all of them."""
        return [t for t in (self.text, self.response, self.chosen, self.rejected) if t]


def canonical_bytes(r: Record) -> bytes:
    return _SEP.join(
        [
            r.kind.value.encode(),
            _encode(r.text),
            _encode(r.label),
            _encode(r.response),
            _encode(r.chosen),
            _encode(r.rejected),
            _encode(r.doc_id),
        ]
    )


def content_id(r: Record) -> str:
    """SHA-256 of the canonical content; row and source are not content."""
    return hashlib.sha256(canonical_bytes(r)).hexdigest()
