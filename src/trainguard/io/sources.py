"""Data in the forms people already hold it: in-memory tables and saved Hugging Face datasets.

Each source yields the same `RawItem`s as the file readers (row = position,
no line), so kind detection, field mapping, label validation and record ids
are the ones a JSONL file gets: the same examples give the same findings.

- lists (or tuples) of dicts; pandas and polars DataFrames; pyarrow Tables and
  RecordBatches; a `datasets.Dataset` (its index mapping applied: a shuffled or
  selected view is read as the user sees it);
- a `datasets` `save_to_disk` folder, read with pyarrow alone (the `datasets`
  package is not needed); a `DatasetDict` folder needs `split`.

Values are made plain Python (numpy scalars, pandas NA/NaN -> None), never
coerced otherwise: label validation sees what the table holds. A saved folder
names its Arrow files in `state.json`; a name that leaves the folder is refused,
so a crafted `state.json` cannot make trainguard read another file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from trainguard.errors import ConfigError, DataError
from trainguard.io.readers import RawItem

BATCH = 4096  # rows converted at a time: bounded memory for large tables
HF_STATE = "state.json"
HF_DICT = "dataset_dict.json"


def is_hf_folder(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and ((p / HF_STATE).is_file() or (p / HF_DICT).is_file())


def describe(obj: Any) -> str:
    """What `Dataset.path` says for an in-memory source (there is no file)."""
    return f"<{type(obj).__module__.split('.')[0]}.{type(obj).__name__}>"


def object_items(obj: Any, split: str | None = None) -> Iterator[RawItem]:
    """RawItems from an in-memory table; a clear error for anything else."""
    name = describe(obj)
    if isinstance(obj, (list, tuple)):
        return _from_dicts(name, obj)
    module = type(obj).__module__.split(".")[0]
    kind = type(obj).__name__
    if module == "pandas" and kind == "DataFrame":
        return _from_batches(name, (obj.iloc[a:a + BATCH].to_dict("records") for a in range(0, len(obj), BATCH)))
    if module == "polars" and kind == "DataFrame":
        return _from_batches(name, (obj.slice(a, BATCH).to_dicts() for a in range(0, obj.height, BATCH)))
    if module == "pyarrow" and kind in ("Table", "RecordBatch"):
        return _from_batches(name, (b.to_pylist() for b in _arrow_batches(obj)))
    if module == "datasets" and kind in ("DatasetDict", "IterableDatasetDict"):
        if split is None:
            raise ConfigError(f"{name} has splits {sorted(obj)}; pick one (split=..., --split)")
        if split not in obj:
            raise ConfigError(f"{name} has no split {split!r}; it has: {', '.join(sorted(obj))}")
        return object_items(obj[split])
    if module == "datasets" and kind == "Dataset":
        view = obj.with_format("arrow")
        return _from_batches(name, (t.to_pylist() for t in view.iter(batch_size=BATCH)))
    raise ConfigError(
        f"cannot read a {module}.{kind}; give a file path, a list of dicts, a pandas or polars DataFrame, "
        "a pyarrow Table, or a datasets.Dataset"
    )


def hf_folder_items(path: str | Path, split: str | None = None, hasher: Any = None) -> Iterator[RawItem]:
    """RawItems from a `save_to_disk` folder; `hasher` is fed the Arrow files' bytes in order."""
    import pyarrow as pa

    folder = Path(path)
    if (folder / HF_DICT).is_file():
        splits = _json(folder / HF_DICT).get("splits")
        if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
            raise DataError(str(folder / HF_DICT), "field 'splits' must be a list of split names")
        if split is None:
            raise ConfigError(f"{folder} is a DatasetDict with splits {', '.join(splits)}; pick one with --split")
        if split not in splits:
            raise ConfigError(f"{folder} has no split {split!r}; it has: {', '.join(splits)}")
        folder = folder / split
    elif split is not None:
        raise ConfigError(f"{folder} is a single dataset, not a DatasetDict: drop --split {split}")
    files = _arrow_files(folder)

    def batches() -> Iterator[list[dict[str, Any]]]:
        for f in files:
            try:
                with pa.memory_map(str(f)) as source:
                    if hasher is not None:  # hashed from the same mapping the batches are read from: one pass
                        hasher.update(source.read_buffer())
                        source.seek(0)
                    for batch in pa.ipc.open_stream(source):
                        yield batch.to_pylist()
            except (pa.ArrowInvalid, OSError) as e:
                raise DataError(str(f), f"not a readable Arrow stream: {e}") from None

    return _from_batches(str(folder), batches())


def _arrow_files(folder: Path) -> list[Path]:
    state_path = folder / HF_STATE
    if not state_path.is_file():
        raise DataError(str(folder), f"no {HF_STATE}: not a datasets save_to_disk folder")
    entries = _json(state_path).get("_data_files")
    if not isinstance(entries, list) or not entries:
        raise DataError(str(state_path), "field '_data_files' must be a non-empty list")
    files = []
    for i, entry in enumerate(entries):
        name = entry.get("filename") if isinstance(entry, dict) else None
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise DataError(str(state_path), f"_data_files[{i}].filename must be a file name inside the folder, "
                                             f"got {name!r}")
        if not (folder / name).is_file():
            raise DataError(str(state_path), f"_data_files[{i}]: {name} is missing from {folder}")
        files.append(folder / name)
    return files


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(str(path), f"not readable JSON: {e}") from None
    if not isinstance(value, dict):
        raise DataError(str(path), "expected a JSON object")
    return value


def _arrow_batches(obj: Any) -> Iterable[Any]:
    if type(obj).__name__ == "RecordBatch":
        return [obj]
    return obj.to_batches(max_chunksize=BATCH)


def _from_dicts(name: str, rows: Iterable[Any]) -> Iterator[RawItem]:
    return _from_batches(name, [rows])


def _from_batches(name: str, batches: Iterable[Iterable[Any]]) -> Iterator[RawItem]:
    row = 0
    for batch in batches:
        for value in batch:
            if isinstance(value, Mapping):
                yield RawItem(row, None, {str(k): _plain(v) for k, v in value.items()})
            else:
                yield RawItem(row, None, None, DataError(name, f"expected a mapping of field -> value, got "
                                                               f"{type(value).__name__}", row=row))
            row += 1


def _plain(v: Any) -> Any:
    """numpy/pandas scalars as Python values; missing (NaN, NA, NaT) as None. Lists and dicts recurse."""
    if v is None or isinstance(v, (str, bool, int)):
        return v
    if isinstance(v, float):
        return None if math.isnan(v) else v
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    module = type(v).__module__.split(".")[0]
    if module == "numpy":
        if getattr(v, "ndim", 0):  # an array cell (e.g. a list column through pandas)
            return [_plain(x) for x in v.tolist()]
        return _plain(v.item())
    if module == "pandas":
        import pandas as pd

        if v is pd.NA or v is pd.NaT:
            return None
    return v
