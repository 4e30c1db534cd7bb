"""trainguard: provenance, poisoning scans, review and signed releases for training data."""

from trainguard._version import __version__
from trainguard.findings import Confidence, DetectorResult, Finding, Severity
from trainguard.io.dataset import Dataset, iter_records, load
from trainguard.records import Kind, Record
from trainguard.report.model import Report
from trainguard.scan import scan

__all__ = [
    "Confidence", "Dataset", "DetectorResult", "Finding", "Kind", "Record", "Report", "Severity",
    "__version__", "iter_records", "load", "scan",
]
