"""Dataset kinds and field mappings: raw objects in, typed `Record`s out.

Auto-detection looks at the field names of the first rows; `--field role=column`
overrides any of them. Each record is validated on its own, so an error names
the exact row and field. `why` says which kind was resolved and from what, so
every command can tell the user.

A text column next to a label-like column (stars, rating, sentiment, ...) but
no `label` is refused rather than read as unlabelled documents: scanned as
documents, a label-flipping or backdoor poison there would pass with "no
findings". Map the column (`--field label=stars`) or say `--kind documents`.

The label rule: all labels of a file are one JSON type: strings, or integers,
or booleans. A whole float within +-2**53 (`1.0`)
is the integer it spells (`1`), with a note; any other float, or a label of
another type than the file's (decided by the first rows), is an error naming the
file, line, row and field. Nothing is coerced silently: `True` next to `1`, or
`1e30` (which no float holds exactly) would otherwise become a class of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

from trainguard.errors import ConfigError, DataError
from trainguard.io.readers import _typename
from trainguard.records import Kind, Record

ROLES = (
    "text", "label", "prompt", "response", "instruction", "input",
    "messages", "chosen", "rejected", "id", "source",
)  # fmt: skip
# Columns that hold a class in published classification sets under another name than `label`.
LABEL_LIKE = (
    "labels", "target", "class", "category", "stars", "star", "rating", "ratings", "score", "sentiment",
    "polarity", "y", "overall", "grade", "emotion", "intent", "verdict", "is_spam", "toxic", "fine_label",
    "coarse_label", "label_text", "class_label",
)  # fmt: skip
EXACT_INT = 2**53  # the largest span in which every integer is a float


@dataclass(frozen=True)
class FieldMap:
    """Which column plays which role. None = role not used."""

    text: str | None = None
    label: str | None = None
    prompt: str | None = None
    response: str | None = None
    instruction: str | None = None
    input: str | None = None
    messages: str | None = None
    chosen: str | None = None
    rejected: str | None = None
    id: str | None = None
    source: str | None = None

    def used(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}


def parse_field_overrides(pairs: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        role, sep, column = pair.partition("=")
        role, column = role.strip(), column.strip()
        if not sep or not role or not column:
            raise ConfigError(f"--field expects ROLE=COLUMN, got {pair!r}")
        if role not in ROLES:
            raise ConfigError(f"--field: unknown role {role!r}; roles are: {', '.join(ROLES)}")
        out[role] = column
    return out


def _first(keys: set[str], *names: str) -> str | None:
    return next((n for n in names if n in keys), None)


def detect_kind(keys: set[str], overrides: Mapping[str, str] | None = None) -> tuple[Kind, FieldMap]:
    """Guess the kind from field names. Raises ConfigError when nothing fits."""
    o = dict(overrides or {})
    k = keys | set(o.values())

    def pick(role: str, *names: str) -> str | None:
        return o.get(role) or _first(k, *names)

    if pick("chosen", "chosen") and pick("rejected", "rejected"):
        fm = FieldMap(prompt=pick("prompt", "prompt", "question", "instruction"), chosen=pick("chosen", "chosen"),
                      rejected=pick("rejected", "rejected"), id=pick("id", "id"), source=pick("source", "source"))
        return Kind.PREFERENCE, fm
    if pick("messages", "messages", "conversations"):
        return Kind.INSTRUCTION, FieldMap(messages=pick("messages", "messages", "conversations"),
                                          id=pick("id", "id"), source=pick("source", "source"))
    if "instruction" in o or ("instruction" in k and _first(k, "output", "response")):
        fm = FieldMap(instruction=pick("instruction", "instruction"), input=pick("input", "input", "context"),
                      response=pick("response", "output", "response"), id=pick("id", "id"),
                      source=pick("source", "source"))
        return Kind.INSTRUCTION, fm
    prompt = pick("prompt", "prompt", "question", "query")
    response = pick("response", "response", "completion", "answer", "output")
    if prompt and response:
        return Kind.INSTRUCTION, FieldMap(prompt=prompt, response=response, id=pick("id", "id"),
                                          source=pick("source", "source"))
    text = pick("text", "text", "sentence", "content", "document", "passage")
    label = pick("label", "label", "labels", "target", "class", "category")
    if text and label:
        return Kind.CLASSIFICATION, FieldMap(text=text, label=label, id=pick("id", "id"),
                                             source=pick("source", "source"))
    if text:
        return Kind.DOCUMENTS, FieldMap(text=text, id=pick("id", "id", "doc_id", "_id"),
                                        source=pick("source", "source"))
    raise ConfigError(
        f"cannot tell the dataset kind from fields {sorted(keys)}; pass --kind and --field ROLE=COLUMN"
    )


def label_like_column(keys: set[str], fm: FieldMap) -> str | None:
    """A column that looks like a class label and that the field map leaves unused."""
    used = set(fm.used().values())
    by_lower = {k.lower(): k for k in keys if k not in used}
    return next((by_lower[n] for n in LABEL_LIKE if n in by_lower), None)


def why(kind: Kind, fm: FieldMap, explicit: bool, overrides: Mapping[str, str] | None = None) -> str:
    """One line: which kind, decided how, from which columns."""
    cols = ", ".join(f"{role}={col!r}" for role, col in fm.used().items())
    how = f"--kind {kind.value}" if explicit else "detected from the field names"
    extra = f"; --field {', '.join(f'{r}={c}' for r, c in sorted(overrides.items()))}" if overrides else ""
    return f"{kind.value} ({how}{extra}: {cols})"


def fieldmap_for(kind: Kind, keys: set[str], overrides: Mapping[str, str] | None = None) -> FieldMap:
    """The mapping for an explicitly chosen kind (auto-detect within that kind)."""
    guessed_kind, fm = detect_kind(keys, overrides) if _detectable(keys, overrides) else (None, FieldMap())
    if guessed_kind is kind:
        return fm
    o = dict(overrides or {})
    k = keys | set(o.values())
    if kind is Kind.CLASSIFICATION:
        fm = FieldMap(text=o.get("text") or _first(k, "text", "sentence", "content"),
                      label=o.get("label") or _first(k, "label", "labels", "target", "class"))
    elif kind is Kind.DOCUMENTS:
        fm = FieldMap(text=o.get("text") or _first(k, "text", "content", "document", "passage", "answer"),
                      id=o.get("id") or _first(k, "id", "doc_id", "_id"))
    elif kind is Kind.INSTRUCTION:
        fm = FieldMap(prompt=o.get("prompt") or _first(k, "prompt", "question", "query", "instruction"),
                      response=o.get("response") or _first(k, "response", "completion", "answer", "output"))
    else:
        fm = FieldMap(prompt=o.get("prompt") or _first(k, "prompt", "question"),
                      chosen=o.get("chosen") or _first(k, "chosen"), rejected=o.get("rejected") or _first(k, "rejected"))
    return replace(fm, source=o.get("source") or _first(k, "source"), id=fm.id or o.get("id"))


def _detectable(keys: set[str], overrides: Mapping[str, str] | None) -> bool:
    try:
        detect_kind(keys, overrides)
    except ConfigError:
        return False
    return True


NO_ID = "-"  # the id of a record built without its content hash (RecordBuilder.content_ids = False)


class RecordBuilder:
    """Turns one raw object into a `Record`, or a DataError naming the field."""

    def __init__(self, path: str, kind: Kind, fm: FieldMap, label_family: str | None = None):
        self.path, self.kind, self.fm = path, kind, fm
        self.label_family = label_family  # the file's label type; None: not yet known (checked per row only)
        self.whole_floats = 0  # labels like 1.0 read as the integer they spell
        self.content_ids = True  # False: records get id NO_ID, not their SHA-256 (a sharded scan's later passes)
        required = {
            Kind.CLASSIFICATION: ("text", "label"),
            Kind.DOCUMENTS: ("text",),
            Kind.PREFERENCE: ("chosen", "rejected"),
        }.get(kind, ())
        missing = [r for r in required if not getattr(fm, r)]
        if kind is Kind.INSTRUCTION and not (fm.messages or ((fm.prompt or fm.instruction) and fm.response)):
            missing.append("prompt/response, instruction/output or messages")
        if missing:
            msg = f"kind {kind.value} needs field(s) {', '.join(missing)}; map them with --field ROLE=COLUMN"
            raise DataError(path, msg)
        self._known = set(fm.used().values())

    def build(self, raw: Mapping[str, Any], row: int, line: int | None) -> Record:
        fm = self.fm
        meta = {k: v for k, v in raw.items() if k not in self._known and isinstance(v, (str, int, float, bool))}
        common = {"row": row, "line": line, "kind": self.kind, "meta": meta,
                  "source": self._opt_str(raw, fm.source, row, line),
                  "doc_id": self._opt_str(raw, fm.id, row, line)}
        if not self.content_ids:
            common["id"] = NO_ID
        if self.kind is Kind.CLASSIFICATION:
            return Record(text=self._str(raw, fm.text, row, line), label=self._label(raw, row, line), **common)
        if self.kind is Kind.DOCUMENTS:
            return Record(text=self._str(raw, fm.text, row, line), **common)
        if self.kind is Kind.PREFERENCE:
            chosen = self._str(raw, fm.chosen, row, line)
            rejected = self._str(raw, fm.rejected, row, line)
            if fm.prompt:
                prompt = self._str(raw, fm.prompt, row, line)
            else:
                prompt, chosen, rejected = split_dialogue_pair(chosen, rejected)
            return Record(text=prompt, chosen=chosen, rejected=rejected, **common)
        # instruction
        if fm.messages:
            prompt, response = self._messages(raw, row, line)
        elif fm.instruction:
            prompt = self._str(raw, fm.instruction, row, line)
            extra = self._opt_str(raw, fm.input, row, line)
            if extra:
                prompt = f"{prompt}\n\n{extra}"
            response = self._str(raw, fm.response, row, line)
        else:
            prompt = self._str(raw, fm.prompt, row, line)
            response = self._str(raw, fm.response, row, line)
        return Record(text=prompt, response=response, **common)

    def _err(self, msg: str, row: int, line: int | None, field: str | None) -> DataError:
        return DataError(self.path, msg, row=row, line=line, field=field)

    def _str(self, raw: Mapping[str, Any], name: str | None, row: int, line: int | None) -> str:
        assert name is not None
        if name not in raw:
            raise self._err("missing field", row, line, name)
        value = raw[name]
        if not isinstance(value, str):
            raise self._err(f"expected a string, got {_typename(value)}", row, line, name)
        return value

    def _opt_str(self, raw: Mapping[str, Any], name: str | None, row: int, line: int | None) -> str | None:
        if not name or raw.get(name) is None:
            return None
        value = raw[name]
        if isinstance(value, str):
            return value
        if isinstance(value, float) and value.is_integer() and abs(value) > EXACT_INT:
            raise self._err(f"{value!r} is a whole number beyond 2**53 written as a float, so its exact value "
                            "is lost; write it as a string", row, line, name)
        text = _scalar_text(value)
        if text is None:
            raise self._err(f"expected a string, got {_typename(value)}", row, line, name)
        return text

    def _label(self, raw: Mapping[str, Any], row: int, line: int | None) -> str:
        name = self.fm.label
        assert name is not None
        if name not in raw or raw[name] is None:
            raise self._err("missing label", row, line, name)
        value = raw[name]
        if isinstance(value, float) and math.isnan(value):
            raise self._err("missing label (NaN)", row, line, name)
        if isinstance(value, str) and not value.strip():
            raise self._err("empty label", row, line, name)
        family, problem = label_family(value)
        if problem is not None and family == "float":
            raise LabelTypeError(self.path, problem, row=row, line=line, field=name, family=family)
        if problem is not None:
            raise self._err(problem, row, line, name)
        if self.label_family is not None and family != self.label_family:
            raise LabelTypeError(self.path, f"label {_shown(value)} is {_article(family)}, but this file's labels "
                                 f"are {self.label_family}s (labels must all be strings, all integers or all "
                                 f"booleans)", row=row, line=line, field=name, family=family)
        if isinstance(value, float):
            self.whole_floats += 1
        text = value.strip() if isinstance(value, str) else _scalar_text(value)
        if text is None:
            raise self._err(f"expected a scalar label, got {_typename(value)}", row, line, name)
        if not text:
            raise self._err("empty label", row, line, name)
        return text

    def _messages(self, raw: Mapping[str, Any], row: int, line: int | None) -> tuple[str, str]:
        name = self.fm.messages
        assert name is not None
        msgs = raw.get(name)
        if not isinstance(msgs, list) or not msgs:
            raise self._err("expected a non-empty list of messages", row, line, name)
        turns: list[tuple[str, str]] = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict):
                raise self._err(f"expected an object, got {_typename(m)}", row, line, f"{name}[{i}]")
            role = m.get("role", m.get("from"))
            content = m.get("content", m.get("value"))
            if not isinstance(role, str):
                raise self._err("missing or non-string role", row, line, f"{name}[{i}].role")
            if not isinstance(content, str):
                raise self._err("missing or non-string content", row, line, f"{name}[{i}].content")
            turns.append((role.lower(), content))
        last = max((i for i, (r, _) in enumerate(turns) if r in ("assistant", "gpt", "model")), default=None)
        if last is None:
            raise self._err("no assistant message to train on", row, line, name)
        prompt = "\n".join(f"{r}: {c}" for r, c in turns[:last])
        return prompt, turns[last][1]


class LabelTypeError(DataError):
    """A label of another JSON type than the file's; collected so one error can list them all."""

    def __init__(self, path: str, message: str, *, row: int, line: int | None, field: str, family: str):
        super().__init__(path, message, row=row, line=line, field=field)
        self.family = family


def label_family(value: Any) -> tuple[str, str | None]:
    """(type family, problem or None) of one raw label: string, integer, boolean, or a problem."""
    if isinstance(value, bool):
        return "boolean", None
    if isinstance(value, int):
        return "integer", None
    if isinstance(value, float):
        if not math.isfinite(value):
            return "float", f"label {value!r} is not a class"
        if not value.is_integer():
            return "float", (f"label {value!r} is a fraction, not a class (labels are strings, integers or "
                             "booleans; regression targets are not supported)")
        if abs(value) > EXACT_INT:
            return "float", (f"label {value!r} is a whole number beyond 2**53 written as a float, so its exact "
                             "value is lost; write it as an integer or a string")
        return "integer", None
    if isinstance(value, str):
        return "string", None
    return _typename(value), f"expected a scalar label, got {_typename(value)}"


def family_of_head(values: list[Any]) -> str | None:
    """The label family most of the first rows use (ties: the first row's)."""
    fams = [label_family(v)[0] for v in values if v is not None and label_family(v)[1] is None]
    if not fams:
        return None
    counts = {f: fams.count(f) for f in fams}
    return max(counts, key=lambda f: (counts[f], -fams.index(f)))


def _article(family: str) -> str:
    return f"an {family}" if family[0] in "aeiou" else f"a {family}"


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def split_dialogue_pair(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split hh-rlhf style full dialogues into (shared prompt, chosen reply, rejected reply)."""
    marker = "\n\nAssistant:"
    n = 0
    limit = min(len(chosen), len(rejected))
    while n < limit and chosen[n] == rejected[n]:
        n += 1
    cut = chosen.rfind(marker, 0, n + 1)
    if cut < 0:
        return "", chosen, rejected
    cut += len(marker)
    return chosen[:cut], chosen[cut:].strip(), rejected[cut:].strip()


def _scalar_text(value: Any) -> str | None:
    """A number or boolean as the text a CSV export of it would hold, so ids match across formats.

    0 -> "0", 1.0 -> "1" (JSON writers differ on whole floats), 0.5 -> "0.5",
    True -> "True" (what pandas and the csv module write). None for anything else.
    """
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    return None
