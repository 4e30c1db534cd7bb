"""How to read a dataset file, resolved once and passed down unchanged.

Every command that reads data builds one `LoadOptions` from its options (the
same four on each: `--kind`, `--field`, `--on-error`, `--max-record-bytes`) and
hands it to the library, instead of a `**load_options` dict in which a misspelt
key travels silently. Bad values fail here, before any data is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from trainguard.errors import ConfigError
from trainguard.io.readers import DEFAULT_MAX_RECORD_BYTES, FORMATS
from trainguard.records import Kind

ON_ERROR = ("fail", "skip")


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """kind: `auto` or a Kind value; fields: (role, column) pairs; on_error: fail or skip."""

    kind: str = "auto"
    fields: tuple[tuple[str, str], ...] = ()
    on_error: str = "fail"
    fmt: str | None = None
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    split: str | None = None  # a split of a datasets DatasetDict (object or save_to_disk folder)

    def __post_init__(self) -> None:
        kind = self.kind.value if isinstance(self.kind, Kind) else ("auto" if self.kind is None else self.kind)
        if kind != "auto" and kind not in {k.value for k in Kind}:
            names = ", ".join(["auto", *(k.value for k in Kind)])
            raise ConfigError(f"unknown kind {kind!r}; expected one of: {names}")
        object.__setattr__(self, "kind", kind)
        pairs = self.fields.items() if isinstance(self.fields, Mapping) else (self.fields or ())
        object.__setattr__(self, "fields", tuple(sorted((str(r), str(c)) for r, c in pairs)))
        if self.on_error not in ON_ERROR:
            raise ConfigError(f"--on-error must be one of {ON_ERROR}, got {self.on_error!r}")
        if self.fmt is not None and self.fmt not in FORMATS:
            raise ConfigError(f"unknown format {self.fmt!r}; use one of: {', '.join(FORMATS)}")
        m = self.max_record_bytes
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ConfigError(f"--max-record-bytes must be a positive integer, got {m!r}")

    @property
    def field_map(self) -> dict[str, str]:
        return dict(self.fields)

    @property
    def want(self) -> Kind | None:
        """The kind asked for, or None to detect it."""
        return None if self.kind == "auto" else Kind(self.kind)

    @classmethod
    def of(cls, options: "LoadOptions | None" = None, **given: Any) -> "LoadOptions":
        """`options` as is, or one built from keyword arguments (None values mean the default); not both."""
        given = {k: v for k, v in given.items() if v is not None}
        if options is not None:
            if given:
                raise ConfigError(f"give LoadOptions or {', '.join(sorted(given))}, not both")
            return options
        return cls(**given)
