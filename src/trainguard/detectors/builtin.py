"""Importing this module registers every built-in detector."""

from trainguard.detectors import invisible_chars, near_duplicates, trigger_association  # noqa: F401
