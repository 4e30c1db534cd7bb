"""`trainguard.settings_text`: NAME=VALUE strings typed by a Settings dataclass (attack --param, scan --set)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainguard import settings_text as st_
from trainguard.errors import ConfigError


@dataclass(frozen=True)
class Knobs:
    strength: float = 0.5
    loud: bool = False
    limit: Optional[int] = None
    repeat: int = 1
    marks: tuple[str, ...] = ("~",)
    mode: Literal["fast", "slow"] = "fast"
    label: Optional[str] = None
    names: list[str] = field(default_factory=list)
    pairs: tuple[tuple[str, str], ...] = ()
    loose: tuple = ()
    table: dict[str, int] = field(default_factory=dict)


SPECS = st_.specs(Knobs)


def parse(*values: str, owner: str = "attack knobs") -> dict[str, Any]:
    return st_.parse(values, SPECS, owner=owner, noun="parameter", option="--param")


@pytest.mark.parametrize(("values", "expected"), [
    ([], {}),
    (["strength=0.25", "loud=true", "limit=7", "repeat=-3", "marks=@@at"],
     {"strength": 0.25, "loud": True, "limit": 7, "repeat": -3, "marks": ("@at",)}),
    (["strength=2", "loud=OFF", "limit=", "marks=a", "marks=b,c"],
     {"strength": 2.0, "loud": False, "limit": None, "marks": ("a", "b,c")}),
    (["strength=1e-3", "loud=yes", "limit=none", "repeat=+4"],
     {"strength": 0.001, "loud": True, "limit": None, "repeat": 4}),
    (["loud=0", "limit=0", "strength= 3 "], {"loud": False, "limit": 0, "strength": 3.0}),
    (["strength=inf", "repeat=1_000"], {"strength": math.inf, "repeat": 1000}),
    (["mode=slow", "label=none", "names=x", "names=y"], {"mode": "slow", "label": "none", "names": ["x", "y"]}),
    (["label="], {"label": None}),
    (['pairs=["Who?", "Bacon"]', 'loose=[1, "a"]', "loose=7"],
     {"pairs": (("Who?", "Bacon"),), "loose": ([1, "a"], 7)}),
    (["marks=  padded  ", "label= kept "], {"marks": ("  padded  ",), "label": " kept "}),  # text is never stripped
])
def test_values_are_coerced_to_the_annotated_type(values, expected):
    got = parse(*values)
    assert got == expected
    assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in expected.items()}


def test_dashes_in_names_mean_underscores():
    @dataclass
    class S:
        num_triggers: int = 1

    assert st_.parse(["num-triggers=3"], st_.specs(S)) == {"num_triggers": 3}


@pytest.mark.parametrize(("files", "values", "message"), [
    ({}, ["colour=red"], "unknown parameter 'colour'; its parameters: label, limit, loose, loud, marks, mode, names, "
                         "pairs, repeat, strength, table"),
    ({}, ["strenght=1"], "did you mean 'strength'?"),
    ({}, ["repeat=2.5"], "parameter repeat (int): expected an integer, got '2.5'"),
    ({}, ["strength=lots"], "parameter strength (float): expected a number, got 'lots'"),
    ({}, ["strength=nan"], "expected a number, got 'nan' (NaN would disable the setting)"),
    ({}, ["loud=maybe"], "parameter loud (bool): expected true or false, got 'maybe'"),
    ({}, ["limit=few"], "parameter limit (int | None): expected an integer"),
    ({}, ["mode=medium"], 'parameter mode ("fast" | "slow"): expected one of fast, slow, got \'medium\''),
    ({}, ["repeat=1", "repeat=2"], "parameter repeat (int) given twice"),
    ({}, ["repeat"], "--param expects NAME=VALUE, got 'repeat'"),
    ({}, ["=3"], "--param expects NAME=VALUE, got '=3'"),
    ({}, ["repeat=@n.txt"], "takes a single value, not @FILE"),
    ({}, ["marks="], "parameter marks (tuple[str, ...]): empty value"),
    ({}, ["marks=@"], "@ needs a file name"),
    ({}, ["marks=@{tmp}/missing.txt"], "parameter marks (tuple[str, ...]): file {tmp}/missing.txt not found"),
    ({}, ["marks=@{tmp}"], "is a directory"),
    ({"m.txt": b"\n  \n\n"}, ["marks=@{tmp}/m.txt"], "{tmp}/m.txt has no non-empty lines"),
    ({"m.txt": b"ok\nfine\n\xff\xfe bad\n"}, ["marks=@{tmp}/m.txt"], "{tmp}/m.txt line 3: not UTF-8"),
    ({"m.json": b"[]"}, ["marks=@{tmp}/m.json"], "{tmp}/m.json has an empty JSON array"),
    ({"m.json": b'["a",\n "b"\n "c"]'}, ["marks=@{tmp}/m.json"], "{tmp}/m.json line 3: not JSON"),
    ({"m.json": b'{"a": 1}'}, ["marks=@{tmp}/m.json"], "{tmp}/m.json must hold a JSON array of items, got a dict"),
    ({"m.json": b'["a", 3]'}, ["marks=@{tmp}/m.json"], "{tmp}/m.json item 2: expected str, got 3"),
    ({}, ["pairs=Who?"], 'items are JSON values of type tuple[str, str] (e.g. ["text", "text"]), got \'Who?\''),
    ({}, ['pairs=["Who?"]'],
     "parameter pairs (tuple[tuple[str, str], ...]): expected 2 items (tuple[str, str]), got 1"),
    ({}, ['pairs=["Who?", 3]'], "expected str, got 3"),
    ({"p.jsonl": b'["a", "b"]\n\n["c"]\n'}, ["pairs=@{tmp}/p.jsonl"], "{tmp}/p.jsonl line 3: expected 2 items"),
    ({}, ['table={"a": 1}'], "a dict[str, int] setting cannot be given as text; use the Python API"),
])
def test_errors_name_owner_setting_type_and_file(tmp_path, files, values, message):
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(st_.SettingsTextError) as e:
        parse(*(v.replace("{tmp}", str(tmp_path)) for v in values))
    assert str(e.value).startswith("attack knobs: ")
    assert message.replace("{tmp}", str(tmp_path)) in str(e.value)
    assert isinstance(e.value, ConfigError)  # the CLI maps it to exit 2


def test_files_keep_item_text_and_mix_with_inline_items(tmp_path):
    # BOM dropped, CRLF and blank lines skipped, commas and U+2028 kept inside an item, nothing else stripped.
    (tmp_path / "m.txt").write_bytes("\ufeffAgent Smith\r\n\n   \n  Nightfall, phase two\na\u2028b\n".encode())
    (tmp_path / "m.json").write_text(json.dumps(["x", " y "]))
    (tmp_path / "p.jsonl").write_text('["q1", "a1"]\n["q2", "a2"]\n')
    got = parse("marks=first", f"marks=@{tmp_path / 'm.txt'}", f"marks=@{tmp_path / 'm.json'}",
                f"pairs=@{tmp_path / 'p.jsonl'}", f"names=@{tmp_path / 'm.json'}")
    assert got["marks"] == ("first", "Agent Smith", "  Nightfall, phase two", "a\u2028b", "x", " y ")
    assert got["pairs"] == (("q1", "a1"), ("q2", "a2"))
    assert got["names"] == ["x", " y "]


def test_without_owner_the_message_starts_at_the_setting():
    with pytest.raises(st_.SettingsTextError, match=r"^setting repeat \(int\): expected an integer"):
        st_.parse(["repeat=x"], SPECS)
    with pytest.raises(st_.SettingsTextError, match="it takes no settings"):
        st_.parse(["x=1"], st_.specs(None))


def test_specs_and_type_names():
    assert {n: s.type_name for n, s in SPECS.items()} == {
        "strength": "float", "loud": "bool", "limit": "int | None", "repeat": "int", "marks": "tuple[str, ...]",
        "mode": '"fast" | "slow"', "label": "str | None", "names": "list[str]",
        "pairs": "tuple[tuple[str, str], ...]", "loose": "tuple", "table": "dict[str, int]"}
    assert [n for n, s in SPECS.items() if s.is_list] == ["marks", "names", "pairs", "loose"]
    assert st_.specs(int) == {}

    @dataclass
    class Helped:
        k: int = dataclasses.field(default=3, metadata={"help": "neighbours"})
        derived: int = dataclasses.field(default=0, init=False)

    assert st_.specs(Helped) == {"k": st_.SettingSpec("k", int, "neighbours")}


def test_unresolvable_annotations_fall_back_to_the_defaults_type():
    # A plug-in annotating with a name it never imports: --set used to coerce by the default; it still does.
    plugin = dataclasses.make_dataclass("Plugin", [("rows", "int", 5), ("cutoff", "float", 0.5), ("flag", "bool", True),
                                                   ("other", "Missing", None)])
    got = st_.specs(plugin)
    assert [got[n].type for n in ("rows", "cutoff", "flag")] == [int, float, bool]
    assert st_.parse(["rows=7", "cutoff=1", "flag=no"], got) == {"rows": 7, "cutoff": 1.0, "flag": False}
    with pytest.raises(st_.SettingsTextError, match="setting other"):
        st_.parse(["other=3"], got)


# --- round trips: what a person would type for a value gives back that value ---------------------------------
@given(st.integers())
def test_int_round_trip(n):
    assert parse(f"repeat={n}") == {"repeat": n}


@given(st.floats(allow_nan=False))
def test_float_round_trip(x):
    got = parse(f"strength={x!r}")["strength"]
    assert got == x and math.copysign(1, got) == math.copysign(1, x)


@given(st.booleans(), st.sampled_from(["true", "yes", "on", "1"]), st.sampled_from(["false", "no", "off", "0"]),
       st.randoms())
def test_bool_spellings_any_case(value, yes, no, rnd):
    word = "".join(c.upper() if rnd.random() < 0.5 else c for c in (yes if value else no))
    assert parse(f"loud={word}") == {"loud": value}


@given(st.text().filter(lambda t: not t.startswith("@")))
def test_text_round_trip_for_str_and_tuple_items(text):
    assert parse(f"label={text}") == {"label": text or None}
    if text:
        assert parse(f"marks={text}", f"marks=@@{text}") == {"marks": (text, "@" + text)}


@given(st.one_of(st.none(), st.integers()))
def test_optional_int_round_trip(n):
    assert parse(f"limit={'' if n is None else n}") == {"limit": n}


# --- contract: every built-in plug-in setting can be typed, and its default read back -----------------------
def _as_text(value: Any, spec: st_.SettingSpec) -> list[str]:
    if spec.is_list:
        return [f"{spec.name}={json.dumps(list(v)) if isinstance(v, (tuple, list)) else v}" for v in value]
    if value is None:
        return [f"{spec.name}="]
    if isinstance(value, bool):
        return [f"{spec.name}={str(value).lower()}"]
    return [f"{spec.name}={value!r}" if isinstance(value, float) else f"{spec.name}={value}"]


def _plugins():
    from trainguard.attacks import registry as attacks
    from trainguard.detectors.base import registry as detectors

    return [(f"detector {n}", c.Settings) for n, c in sorted(detectors().items())] + \
           [(f"attack {n}", c.Settings) for n, c in sorted(attacks().items())]


def test_every_builtin_default_survives_a_text_round_trip():
    checked = 0
    for owner, settings_cls in _plugins():
        fields = st_.specs(settings_cls)
        defaults = dataclasses.asdict(settings_cls())
        for name, spec in fields.items():
            value = defaults[name]
            if (spec.is_list and not value) or (value is None and spec.base is Any):
                continue  # no text form (an empty list; None of an untyped `target`); it is the default anyway
            got = st_.parse(_as_text(value, spec), fields, owner=owner)[name]
            assert got == value and type(got) is type(value), (owner, name)
            checked += 1
    assert checked > 100


def test_check_values_types_what_a_policy_file_gives():
    got = st_.check_values({"strength": 1, "limit": None, "marks": ["a", "b"], "pairs": [["q", "a"]],
                            "mode": "slow", "names": ["x"]}, SPECS)
    assert got == {"strength": 1.0, "limit": None, "marks": ("a", "b"), "pairs": (("q", "a"),), "mode": "slow",
                   "names": ["x"]}
    assert type(got["strength"]) is float
    for values, message in [({"repeat": "3"}, "setting repeat (int): expected int, got \"3\""),
                            ({"loud": 1}, "setting loud (bool): expected bool, got 1"),
                            ({"marks": "ab"}, "expected a JSON array (tuple[str, ...]), got \"ab\""),
                            ({"mode": "medium"}, "expected one of fast, slow"),
                            ({"colour": 1}, "unknown setting 'colour'")]:
        with pytest.raises(st_.SettingsTextError) as e:
            st_.check_values(values, SPECS, owner="policy p.yaml: detector knobs")
        assert str(e.value).startswith("policy p.yaml: detector knobs: ") and message in str(e.value)
