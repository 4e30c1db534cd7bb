"""Importing this module registers every built-in detector."""

from trainguard.detectors import (  # noqa: F401
    availability_junk,
    embedding_clusters,
    feature_collision,
    invisible_chars,
    keyword_influence,
    label_consistency,
    llm_covert,
    llm_polarity,
    llm_preference,
    llm_rag,
    llm_safety,
    near_duplicates,
    spectral_signatures,
    trigger_association,
)
