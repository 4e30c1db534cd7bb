"""Importing this module registers every built-in detector.

Every public module of `trainguard.detectors` is imported (detect-secrets'
lesson: a new detector file is found, never forgotten in a hand-kept list).
The modules come from the installed package's own directory; nothing read
from data picks what is imported. Private modules (`_x`) are shared helpers.
"""

from __future__ import annotations

import importlib
import pkgutil

import trainguard.detectors as _package

NOT_DETECTORS = frozenset({"base", "builtin"})  # the contract and this loader

MODULES = tuple(sorted(m.name for m in pkgutil.iter_modules(_package.__path__)
                       if not m.name.startswith("_") and m.name not in NOT_DETECTORS))

for _name in MODULES:
    importlib.import_module(f"{_package.__name__}.{_name}")
