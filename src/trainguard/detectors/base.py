"""The detector contract and the registry.

A detector declares its name, version, the dataset kinds it serves, what it
needs (labels, embeddings, a model) and a frozen settings dataclass; it returns
findings plus a per-row score. The engine, not the detector, isolates failures.
Built-ins register by decorator; third-party packages through the
`trainguard.detectors` entry-point group. Nothing read from data picks code.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from trainguard._plugins import PluginRegistry, configure
from trainguard.findings import DetectorResult
from trainguard.io.dataset import Dataset
from trainguard.records import Kind

ENTRY_POINT_GROUP = "trainguard.detectors"


@dataclasses.dataclass(frozen=True)
class NoSettings:
    pass


class Detector(ABC):
    name: ClassVar[str]
    version: ClassVar[str] = "1"
    kinds: ClassVar[frozenset[Kind]]
    needs: ClassVar[frozenset[str]] = frozenset()
    atlas: ClassVar[tuple[str, ...]] = ()
    Settings: ClassVar[type] = NoSettings
    description: ClassVar[str] = ""

    def __init__(self, settings: Any = None, **overrides: Any) -> None:
        self.settings = configure(self.Settings, settings, overrides, f"detector {self.name}")

    def applies_to(self, data: Dataset) -> str | None:
        """None when the detector can run on `data`, else the reason it cannot."""
        if data.kind not in self.kinds:
            return f"does not handle {data.kind.value} data"
        if "labels" in self.needs and data.kind is Kind.CLASSIFICATION and len({r.label for r in data}) < 2:
            return "needs at least two labels"
        return None

    def settings_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.settings)

    @abstractmethod
    def run(self, data: Dataset) -> DetectorResult: ...


_REGISTRY: PluginRegistry = PluginRegistry(
    "detector", Detector, ENTRY_POINT_GROUP,
    ("trainguard.detectors.builtin",),
)
register = _REGISTRY.register
registry = _REGISTRY.all
get = _REGISTRY.get
