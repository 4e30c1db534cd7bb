"""The gate: policy, provenance + scan verdicts, review queue, signed release."""

from trainguard.gate.policy import DEFAULT_POLICY, Policy
from trainguard.gate.policy import load as load_policy
from trainguard.gate.release import ReleaseResult, attestation_path, release
from trainguard.gate.run import EXIT_CODES, GateResult, gate

__all__ = [
    "DEFAULT_POLICY", "EXIT_CODES", "GateResult", "Policy", "ReleaseResult", "attestation_path", "gate",
    "load_policy", "release",
]
