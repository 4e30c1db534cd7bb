"""Errors a user can act on: each names the file, the row and the field."""

from __future__ import annotations

from dataclasses import dataclass


class TrainguardError(Exception):
    """Base for errors the CLI prints as one clear line (exit code 2)."""


@dataclass
class DataError(TrainguardError):
    path: str
    message: str
    row: int | None = None  # 0-based record position
    line: int | None = None  # 1-based physical line, where the format has lines
    field: str | None = None

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [self.path]
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return f"{', '.join(where)}: {self.message}"

    def to_dict(self) -> dict:
        return {"path": self.path, "line": self.line, "row": self.row, "field": self.field, "message": self.message}


class ConfigError(TrainguardError):
    """Bad usage: unknown detector, bad option value, bad policy file."""
