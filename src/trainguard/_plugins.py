"""One registry shape for every plug-in kind (detectors, attacks).

Built-ins register by decorator when their modules are imported; third-party
packages add more through an entry-point group. Built-ins win a name clash, so
an installed plug-in can never shadow a built-in check.
"""

from __future__ import annotations

import dataclasses
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, Generic, Mapping, TypeVar

from trainguard.errors import ConfigError

T = TypeVar("T", bound=type)


class PluginRegistry(Generic[T]):
    def __init__(self, noun: str, base: type, group: str, builtin_modules: tuple[str, ...]):
        self.noun, self.base, self.group, self.builtin_modules = noun, base, group, builtin_modules
        self._builtin: dict[str, T] = {}

    def register(self, cls: T) -> T:
        name = cls.name  # type: ignore[attr-defined]
        if name in self._builtin and self._builtin[name] is not cls:
            raise ValueError(f"{self.noun} name {name!r} registered twice")
        self._builtin[name] = cls
        return cls

    def all(self) -> Mapping[str, T]:
        for module in self.builtin_modules:
            import_module(module)
        found = dict(self._builtin)
        for ep in entry_points(group=self.group):
            if ep.name in found:
                continue
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise ConfigError(f"entry point {ep.name} = {ep.value} is not a trainguard {self.base.__name__}")
            found[ep.name] = cls
        return found

    def get(self, name: str) -> T:
        found = self.all()
        if name not in found:
            raise ConfigError(f"unknown {self.noun} {name!r}; available: {', '.join(sorted(found))}")
        return found[name]


def configure(settings_cls: type, settings: Any, overrides: dict[str, Any], owner: str, noun: str = "setting") -> Any:
    """A plug-in's frozen settings: `settings` (or the defaults) with keyword overrides.

    Misspelt names are an error, never silently ignored.
    """
    base = settings if settings is not None else settings_cls()
    if not overrides:
        return base
    known = {f.name for f in dataclasses.fields(base)}
    unknown = set(overrides) - known
    if unknown:
        raise ConfigError(f"{owner}: unknown {noun}(s) {sorted(unknown)}; known: {sorted(known)}")
    return dataclasses.replace(base, **overrides)
