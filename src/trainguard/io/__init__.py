"""Reading datasets: formats, kinds, field mappings, and bad-input reporting."""

from trainguard.io.dataset import Dataset, file_sha256, iter_records, load
from trainguard.io.mapping import FieldMap, detect_kind, parse_field_overrides
from trainguard.io.options import LoadOptions
from trainguard.io.readers import DEFAULT_MAX_RECORD_BYTES, FORMATS, detect_format, read

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES", "FORMATS", "Dataset", "FieldMap", "LoadOptions", "detect_format", "detect_kind",
    "file_sha256", "iter_records", "load", "parse_field_overrides", "read",
]
