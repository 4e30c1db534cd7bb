"""Where the model's input and output live inside one raw row.

Attacks edit raw dicts, not `Record`s, so the poisoned file keeps the input's
shape and field names. A slot resolves, per row, the path of the input text
(where a trigger goes) and of the output (label or response) for each layout
the loader understands: text/label, prompt/response, Alpaca
instruction/input/output and chat `messages`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainguard.errors import ConfigError, DataError
from trainguard.io.mapping import FieldMap
from trainguard.records import Kind

Path = tuple[Any, ...]  # ("text",) or ("messages", 3, "content")

_ASSISTANT = ("assistant", "gpt", "model")
_USER = ("user", "human")


def path_name(path: Path) -> str:
    out = str(path[0])
    for part in path[1:]:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def get_at(row: dict[str, Any], path: Path) -> Any:
    value: Any = row
    for part in path:
        value = value[part]
    return value


def set_at(row: dict[str, Any], path: Path, value: Any) -> None:
    target: Any = row
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value


@dataclass(frozen=True)
class Slots:
    kind: Kind
    fieldmap: FieldMap
    source: str = "<rows>"

    @classmethod
    def for_data(cls, kind: Kind, fm: FieldMap, source: str = "<rows>") -> "Slots":
        if kind is Kind.CLASSIFICATION:
            if not (fm.text and fm.label):
                raise ConfigError(f"{source}: classification attacks need text and label fields; map them with --field")
        elif kind is Kind.INSTRUCTION:
            if not (fm.messages or ((fm.prompt or fm.instruction) and fm.response)):
                raise ConfigError(f"{source}: instruction attacks need prompt/response, instruction/output "
                                  "or messages fields; map them with --field")
        else:
            raise ConfigError(f"{source}: no built-in attack handles {kind.value} data yet "
                              "(classification and instruction only)")
        return cls(kind, fm, source)

    def input_path(self, row: dict[str, Any], i: int) -> Path:
        fm = self.fieldmap
        if self.kind is Kind.CLASSIFICATION:
            return (fm.text,)
        if fm.messages:
            last, msgs = self._last_assistant(row, i)
            for j in range(last - 1, -1, -1):
                if str(msgs[j].get("role", msgs[j].get("from", ""))).lower() in _USER:
                    return (fm.messages, j, self._content_key(msgs[j]))
            raise DataError(self.source, "no user message before the last assistant reply to carry a trigger",
                            row=i, field=fm.messages)
        return (fm.prompt or fm.instruction,)

    def output_path(self, row: dict[str, Any], i: int) -> Path:
        fm = self.fieldmap
        if self.kind is Kind.CLASSIFICATION:
            return (fm.label,)
        if fm.messages:
            last, msgs = self._last_assistant(row, i)
            return (fm.messages, last, self._content_key(msgs[last]))
        return (fm.response,)

    def _last_assistant(self, row: dict[str, Any], i: int) -> tuple[int, list]:
        msgs = row.get(self.fieldmap.messages)
        if isinstance(msgs, list):
            for j in range(len(msgs) - 1, -1, -1):
                m = msgs[j]
                if isinstance(m, dict) and str(m.get("role", m.get("from", ""))).lower() in _ASSISTANT:
                    return j, msgs
        raise DataError(self.source, "no assistant message", row=i, field=self.fieldmap.messages)

    @staticmethod
    def _content_key(msg: dict[str, Any]) -> str:
        return "content" if "content" in msg else "value"
