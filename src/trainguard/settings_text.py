"""Plug-in settings given as text (`NAME=VALUE`), typed by the plug-in's Settings dataclass.

One parser for every place a person types a setting (`trainguard attack --param`,
`trainguard scan --set`), so a value means the same thing everywhere and a typo
fails before any data is read. Types come from the field annotations, never from
the default's type, so tuples, `X | None` and `Literal` settings work too.

Rules: an inline value of a list setting is one item (never split on commas,
since texts contain them) and repeats append; `@FILE` reads a list's items (one
per non-empty line, or a `.json` array); `@@` is a literal leading `@`.
Structured items (pairs) are JSON. Errors are `SettingsTextError`, a
`ConfigError`, and name the setting, its type and, for files, the file and line.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Union

from trainguard.errors import ConfigError

__all__ = ["SettingSpec", "SettingsTextError", "check_values", "from_json", "from_text", "parse", "read_items", "specs",
           "type_name"]

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_SCALARS = (bool, int, float, str)


class SettingsTextError(ConfigError):
    """A setting typed as text that does not fit its field (exit code 2 on the CLI)."""


@dataclass(frozen=True)
class SettingSpec:
    """One settings field as text sees it: its name, resolved type and help."""

    name: str
    type: Any
    help: str = ""

    @property
    def base(self) -> Any:
        return _strip_optional(self.type)[0]

    @property
    def item(self) -> Any:
        """The item type of a list setting (Any when unannotated), or None for a single value."""
        tp = self.base
        if tp in (tuple, list):
            return Any
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is list:
            return args[0] if args else Any
        if origin is tuple and (not args or (len(args) == 2 and args[1] is Ellipsis)):
            return args[0] if args else Any
        return None

    @property
    def is_list(self) -> bool:
        return self.item is not None

    @property
    def type_name(self) -> str:
        return type_name(self.type)


def specs(settings_cls: type | None) -> dict[str, SettingSpec]:
    """Name -> SettingSpec for every init field of a Settings dataclass, annotations resolved.

    A plug-in whose annotations cannot be resolved falls back, field by field, to
    its default's type for scalars (what `--set` always did), else to the raw text.
    """
    if settings_cls is None or not dataclasses.is_dataclass(settings_cls):
        return {}
    try:
        hints = typing.get_type_hints(settings_cls)
    except Exception:  # noqa: BLE001 - a plug-in's unresolvable annotation: fall back per field
        hints = {}
    out = {}
    for f in dataclasses.fields(settings_cls):
        if not f.init:
            continue
        tp = hints.get(f.name, f.type)
        if isinstance(tp, str) and type(f.default) in _SCALARS:
            tp = type(f.default)
        out[f.name] = SettingSpec(f.name, tp, str(f.metadata.get("help") or ""))
    return out


def parse(
    values: Iterable[str],
    fields: Mapping[str, SettingSpec],
    *,
    owner: str = "",
    noun: str = "setting",
    option: str = "NAME=VALUE",
) -> dict[str, Any]:
    """`NAME=VALUE` strings -> settings values, each coerced to its field's type.

    `owner` prefixes every message ("attack badnets"); `noun` names a field in
    them ("parameter"); `option` is how the user wrote the pair ("--param").
    List settings collect items across repeats; a single-value setting given
    twice is refused rather than silently overwritten.
    """
    try:
        return _parse(list(values), fields, noun, option)
    except SettingsTextError as e:
        if not owner:
            raise
        raise SettingsTextError(f"{owner}: {e}") from None


def _parse(values: list[str], fields: Mapping[str, SettingSpec], noun: str, option: str) -> dict[str, Any]:
    items: dict[str, list[Any]] = {}
    scalars: dict[str, Any] = {}
    for raw in values:
        name, sep, value = raw.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise SettingsTextError(f"{option} expects NAME=VALUE, got {raw!r}")
        spec = fields.get(name)
        if spec is None:
            raise SettingsTextError(_unknown(name, fields, noun))
        where = f"{noun} {name} ({spec.type_name})"
        if spec.is_list:
            if _names_file(value):
                if not value[1:].strip():
                    raise SettingsTextError(f"{where}: @ needs a file name (@@ for a literal leading @)")
                items.setdefault(name, []).extend(read_items(Path(value[1:]).expanduser(), spec, where))
            else:
                if value == "":
                    raise SettingsTextError(f"{where}: empty value; give an item, or @FILE with one item per line")
                items.setdefault(name, []).append(_item_from_text(_unescape(value), spec.item, where))
        else:
            if name in scalars:
                raise SettingsTextError(f"{where} given twice; it takes a single value")
            if _names_file(value):
                raise SettingsTextError(f"{where} takes a single value, not @FILE (only list settings read files); "
                                        "write @@ for a literal leading @")
            scalars[name] = from_text(_unescape(value), spec.type, where)
    out: dict[str, Any] = dict(scalars)
    for name, got in items.items():
        base = fields[name].base
        out[name] = list(got) if base is list or typing.get_origin(base) is list else tuple(got)
    return out


def check_values(
    values: Mapping[str, Any], fields: Mapping[str, SettingSpec], *, owner: str = "", noun: str = "setting"
) -> dict[str, Any]:
    """Already-typed values (from a JSON or YAML file) checked against the same types; lists become tuples
    where the field is a tuple. For policy files, whose settings would otherwise reach a plug-in unchecked."""
    try:
        out = {}
        for name, value in values.items():
            key = str(name).replace("-", "_")
            if key not in fields:
                raise SettingsTextError(_unknown(key, fields, noun))
            out[key] = from_json(value, fields[key].type, f"{noun} {key} ({fields[key].type_name})")
        return out
    except SettingsTextError as e:
        if not owner:
            raise
        raise SettingsTextError(f"{owner}: {e}") from None


def _names_file(value: str) -> bool:
    return value.startswith("@") and not value.startswith("@@")


def _unescape(value: str) -> str:
    return value[1:] if value.startswith("@@") else value


def _unknown(name: str, fields: Mapping[str, SettingSpec], noun: str) -> str:
    if not fields:
        return f"unknown {noun} {name!r}; it takes no {noun}s"
    close = difflib.get_close_matches(name, fields, n=1, cutoff=0.75)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {noun} {name!r}{hint}; its {noun}s: {', '.join(sorted(fields))}"


def read_items(path: Path, spec: SettingSpec, where: str) -> list[Any]:
    """Items of a list setting from a UTF-8 file: one per non-empty line, or a JSON array (.json)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SettingsTextError(f"{where}: file {path} not found") from None
    except IsADirectoryError:
        raise SettingsTextError(f"{where}: {path} is a directory, not a file") from None
    except OSError as e:
        raise SettingsTextError(f"{where}: cannot read {path}: {e.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise SettingsTextError(f"{where}: {path} line {line}: not UTF-8 text (byte {e.start})") from None
    if path.suffix.lower() == ".json":
        try:
            arr = json.loads(text)
        except json.JSONDecodeError as e:
            raise SettingsTextError(f"{where}: {path} line {e.lineno}: not JSON ({e.msg})") from None
        if not isinstance(arr, list):
            raise SettingsTextError(f"{where}: {path} must hold a JSON array of items, got a {type(arr).__name__}")
        got = [from_json(v, spec.item, f"{where}: {path} item {n}") for n, v in enumerate(arr, 1)]
    else:
        # Not splitlines(): U+2028 and friends may sit inside an item's text.
        lines = (line[:-1] if line.endswith("\r") else line for line in text.split("\n"))
        got = [_item_from_text(line, spec.item, f"{where}: {path} line {n}")
               for n, line in enumerate(lines, 1) if line.strip()]
    if not got:
        what = "an empty JSON array" if path.suffix.lower() == ".json" else "no non-empty lines"
        raise SettingsTextError(f"{where}: {path} has {what}; give at least one item")
    return got


def _item_from_text(text: str, tp: Any, where: str) -> Any:
    """One list item from text: scalars as typed; structured items (pairs, unannotated) as JSON."""
    if _is_scalar(tp) and tp is not Any:
        return from_text(text, tp, where)
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise SettingsTextError(f"{where}: items are JSON values of type {type_name(tp)} "
                                f"(e.g. {json.dumps(_example(tp))}), got {_clip(text)!r}") from None
    return from_json(value, tp, where)


def from_text(text: str, tp: Any, where: str = "value") -> Any:
    """A single value typed by a person, coerced to `tp`; `where` starts any error message."""
    inner, optional = _strip_optional(tp)
    if optional and (text == "" or (inner is not str and text.strip().lower() in ("none", "null"))):
        return None
    tp = inner
    if tp is Any or tp is object or tp is str:
        return text
    s = text.strip()
    if tp is bool:
        if s.lower() in _TRUE:
            return True
        if s.lower() in _FALSE:
            return False
        raise SettingsTextError(f"{where}: expected true or false, got {_clip(text)!r}")
    if tp is int:
        try:
            return int(s, 10)
        except ValueError:
            raise SettingsTextError(f"{where}: expected an integer, got {_clip(text)!r}") from None
    if tp is float:
        try:
            v = float(s)
        except ValueError:
            raise SettingsTextError(f"{where}: expected a number, got {_clip(text)!r}") from None
        return _not_nan(v, where, text)
    if typing.get_origin(tp) is Literal:
        for choice in typing.get_args(tp):
            if str(choice) == s:
                return choice
        raise SettingsTextError(f"{where}: expected one of {', '.join(map(str, typing.get_args(tp)))}, "
                                f"got {_clip(text)!r}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise SettingsTextError(f"{where}: expected a JSON value of type {type_name(tp)}, "
                                f"got {_clip(text)!r}") from None
    return from_json(value, tp, where)


def _not_nan(v: float, where: str, shown: str) -> float:
    # inf is a usable bound ("never"); NaN compares false with everything and would switch a check off silently.
    if math.isnan(v):
        raise SettingsTextError(f"{where}: expected a number, got {_clip(shown)!r} (NaN would disable the setting)")
    return v


def from_json(value: Any, tp: Any, where: str = "value") -> Any:
    """A JSON-decoded value checked against `tp` (JSON arrays become tuples where tuples are expected)."""
    inner, optional = _strip_optional(tp)
    if value is None and optional:
        return None
    tp = inner
    if tp is Any or tp is object:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    checks = {str: lambda v: isinstance(v, str), bool: lambda v: isinstance(v, bool),
              int: lambda v: isinstance(v, int) and not isinstance(v, bool),
              float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)}
    if tp in checks:
        if not checks[tp](value):
            raise SettingsTextError(f"{where}: expected {type_name(tp)}, got {_clip(json.dumps(value))}")
        return _not_nan(float(value), where, json.dumps(value)) if tp is float else value
    if origin is Literal:
        if value not in args:
            raise SettingsTextError(f"{where}: expected one of {', '.join(map(str, args))}, "
                                    f"got {_clip(json.dumps(value))}")
        return value
    if tp in (tuple, list) or origin in (tuple, list):
        if not isinstance(value, list):
            raise SettingsTextError(f"{where}: expected a JSON array ({type_name(tp)}), "
                                    f"got {_clip(json.dumps(value))}")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise SettingsTextError(f"{where}: expected {len(args)} items ({type_name(tp)}), got {len(value)}")
            return tuple(from_json(v, a, where) for v, a in zip(value, args))
        item = args[0] if args else Any
        got = [from_json(v, item, where) for v in value]
        return list(got) if (tp is list or origin is list) else tuple(got)
    raise SettingsTextError(f"{where}: a {type_name(tp)} setting cannot be given as text; use the Python API")


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = typing.get_args(tp)
        rest = [a for a in args if a is not type(None)]
        if len(rest) < len(args):
            return (rest[0] if len(rest) == 1 else Union[tuple(rest)]), True
    return tp, False


def _is_scalar(tp: Any) -> bool:
    inner = _strip_optional(tp)[0]
    return inner in (str, int, float, bool, Any, object) or typing.get_origin(inner) is Literal


def type_name(tp: Any) -> str:
    """A type as listings and messages show it: `int | None`, `tuple[str, ...]`, `"a" | "b"`."""
    inner, optional = _strip_optional(tp)
    if optional:
        return f"{type_name(inner)} | None"
    if tp is Any:
        return "any"
    if isinstance(tp, str):
        return tp
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        inside = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inside}]"
    return getattr(tp, "__name__", str(tp))


def _example(tp: Any) -> Any:
    """A JSON value of type `tp`, to show in a message what an item looks like."""
    tp = _strip_optional(tp)[0]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return args[0]
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        return [_example(a) for a in args]
    if tp in (tuple, list) or origin in (tuple, list):
        return [_example(args[0])] if args else ["text"]
    return {bool: True, int: 1, float: 0.5}.get(tp, "text")


def _clip(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."
