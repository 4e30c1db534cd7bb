"""trainguard: provenance, poisoning scans, review and signed releases for training data."""

from trainguard._version import __version__
from trainguard.findings import Alert, Confidence, DetectorResult, DetectorStatus, Finding, Severity
from trainguard.io.dataset import Dataset, iter_records, load
from trainguard.io.options import LoadOptions
from trainguard.records import Kind, Record
from trainguard.report.model import Report
from trainguard.scan import run_detector, scan

__all__ = [
    "Alert", "Confidence", "Dataset", "DetectorResult", "DetectorStatus", "Finding", "Kind", "LoadOptions",
    "Record", "Report", "Severity", "__version__", "iter_records", "load", "run_detector", "scan",
]
