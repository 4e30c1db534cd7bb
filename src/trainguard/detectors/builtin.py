"""Importing this module registers every built-in detector."""

from trainguard.detectors import (  # noqa: F401
    invisible_chars,
    llm_preference,
    llm_rag,
    llm_safety,
    near_duplicates,
    trigger_association,
)
