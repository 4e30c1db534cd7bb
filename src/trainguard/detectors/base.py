"""The detector contract and the registry.

A detector declares its name, version, the dataset kinds it serves, what it
needs (one of `NEEDS`: labels, embeddings, a model) and a frozen settings
dataclass. `run(data)` returns a `DetectorResult`: `Alert`s that name
positions in `data.records` (never file rows), rule, title, severity,
confidence, a 0-1 score and raw evidence, plus one 0-1 score per record.
The engine (`trainguard.scan`) owns everything else: it skips a detector
whose kind or needs do not fit the data (with the reason), isolates failures,
and stamps each alert into a `Finding` with file rows, record ids, source
lines, detector name, version and ATLAS ids; positions outside the data fail
the detector. `trainguard.scan.run_detector(det, data)` runs one detector
the same way. Built-ins are found by module (`detectors.builtin`) and
register by decorator; third-party packages through the
`trainguard.detectors` entry-point group. Nothing read from data picks code.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Mapping, Protocol, TypeVar

from trainguard._plugins import PluginRegistry, configure
from trainguard.errors import ConfigError
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
    # Costly dataset artefacts (Dataset.artefact keys, or model names) it computes and another detector reuses: a
    # scan with several jobs runs detectors that share one in the same process, so the work is done once.
    shares: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, settings: Any = None, **overrides: Any) -> None:
        self.settings = configure(self.Settings, settings, overrides, f"detector {self.name}")

    def applies_to(self, data: Dataset) -> str | None:
        """None when the detector can run on `data`, else the reason it cannot.

        The engine checks kinds and declared `needs` first (`skip_reason`);
        override this for conditions only the detector knows, calling super().
        """
        if data.kind not in self.kinds:
            return f"does not handle {data.kind.value} data"
        return None

    def settings_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.settings)

    @abstractmethod
    def run(self, data: Dataset) -> DetectorResult: ...


def _two_labels(data: Dataset) -> str | None:
    if data.kind is Kind.CLASSIFICATION and len({r.label for r in data}) < 2:
        return "needs at least two labels (the data has one)"
    return None


def _two_records(data: Dataset) -> str | None:
    return "needs at least two records to compare embeddings" if len(data) < 2 else None


# Every need a detector may declare, and how the engine checks it on the data.
# "model": a bundled or installed model; the detector reports a missing one itself.
NEEDS: Mapping[str, Callable[[Dataset], str | None]] = {
    "labels": _two_labels,
    "embeddings": _two_records,
    "model": lambda data: None,
}


def check_needs(cls: type) -> None:
    """A declared need the engine does not know is a registration error, never silently ignored."""
    unknown = set(getattr(cls, "needs", ())) - set(NEEDS)
    if unknown:
        raise ConfigError(f"detector {getattr(cls, 'name', cls.__name__)} declares unknown need(s) {sorted(unknown)}; "
                          f"known: {sorted(NEEDS)}")


def skip_reason(det: Detector, data: Dataset) -> str | None:
    """Why the engine does not run `det` on `data` (SKIPPED): another kind, an unmet need, its own reason."""
    if data.kind not in det.kinds:
        return f"does not handle {data.kind.value} data"
    check_needs(type(det))
    for need in sorted(det.needs):
        reason = NEEDS[need](data)
        if reason:
            return reason
    return det.applies_to(data)


S = TypeVar("S", bound="Summary")


class Summary(Protocol):
    """What one shard contributes to a detector's dataset-wide view.

    `merge` is associative and keeps shard order (row positions of `other`
    follow those of `self`), so summaries fold in any tree: a local loop here,
    a Dask reduction on a cluster.
    """

    def merge(self: S, other: S) -> S: ...


class Pass(ABC):
    """Another map over the shards, asked for by `finalize` when one pass is not enough.

    A detector whose decision needs dataset-wide statistics first (counts, a candidate
    set) returns a `Pass` from `finalize`; the engine then summarizes every shard again
    with it (each shard re-read where it is summarised, as in the first pass), merges
    those summaries in shard order and calls the pass's `finalize`, which returns the
    result or yet another `Pass`. A pass carries what its shards need (it is pickled to
    Dask workers) and must be deterministic per row, so any split of the rows into
    shards gives the same merged summary.
    """

    @abstractmethod
    def summarize(self, shard: Dataset) -> Summary: ...

    @abstractmethod
    def finalize(self, summary: Any, kind: Kind) -> "DetectorResult | Pass | NotApplicable": ...


@dataclasses.dataclass(frozen=True)
class NotApplicable:
    """What a sharded finalize answers when the whole data turns out not to fit the detector
    (the in-memory engine's `skip_reason`, known only after a pass): recorded SKIPPED."""

    reason: str


MAX_PASSES = 8  # a detector asking for more passes than this fails (a bug, not a long scan)


class ShardedDetector(Detector):
    """A detector expressed as map (summarize a shard) + reduce (merge) + finalize.

    `run` is the one-shard case of the same code, so the in-memory scan and the
    sharded scan cannot drift apart. Summaries hold counts, sketches and the
    few per-row facts the decision needs, never the texts. `finalize` may return
    a `Pass` for a further map over the shards (see `Pass`).
    """

    shards: ClassVar[bool] = True  # False: a subclass that cannot run sharded (the scan fails it closed)

    @abstractmethod
    def summarize(self, shard: Dataset) -> Summary: ...

    @abstractmethod
    def finalize(self, summary: Any, kind: Kind) -> "DetectorResult | Pass | NotApplicable":
        """Findings and row scores; scores are positional over the shards in order."""

    def run(self, data: Dataset) -> DetectorResult:
        step: Any = self.finalize(self.summarize(data), data.kind)
        for _ in range(MAX_PASSES):
            if not isinstance(step, Pass):
                break
            step = step.finalize(step.summarize(data), data.kind)
        if not isinstance(step, DetectorResult):
            raise RuntimeError(f"{self.name}: no result after the sharded passes ({step!r})")
        return step


def runs_sharded(det: Any) -> bool:
    """Whether a detector (class or instance) has a per-shard path the sharded scan can run."""
    cls = det if isinstance(det, type) else type(det)
    return issubclass(cls, ShardedDetector) and bool(cls.shards)


_REGISTRY: PluginRegistry = PluginRegistry(
    "detector", Detector, ENTRY_POINT_GROUP,
    ("trainguard.detectors.builtin",),
)
get = _REGISTRY.get


def register(cls: type) -> type:
    """Class decorator for built-in detectors; checks the declared needs first."""
    check_needs(cls)
    return _REGISTRY.register(cls)


def registry() -> Mapping[str, type]:
    """Every detector, built-in and plug-in; a plug-in declaring an unknown need is a ConfigError."""
    found = _REGISTRY.all()
    for cls in found.values():
        check_needs(cls)
    return found
