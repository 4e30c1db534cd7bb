"""The training guard: refuse to train on anything but a signed, unchanged release.

Call `require_release` before the first batch is read. It checks the DSSE
signature against keys you trust (not keys the attestation names), the
in-toto statement and predicate types, and the SHA-256 of the file you are
about to train on against the attested subject, and raises `AttestationError`
with the reason otherwise.

The check covers the bytes on disk at call time; read the data right after it
(or from a copy you verified) so the file cannot be swapped in between.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from trainguard.attest.dsse import AttestationError
from trainguard.attest.statement import CheckedRelease, check

__all__ = ["AttestationError", "CheckedRelease", "hf_callback", "require_release"]

KeyLike = str | Path | bytes | Ed25519PublicKey


def require_release(path: str | Path, attestation: str | Path | dict[str, Any],
                    trusted_keys: KeyLike | Iterable[KeyLike], *, min_signatures: int = 1,
                    ledger: str | Path | None = None, by: str | None = None) -> CheckedRelease:
    """Return the verified release, or raise AttestationError naming what differs.

    `ledger`, when given, records the training run (audit question 3).
    """
    if isinstance(trusted_keys, (str, Path, bytes, Ed25519PublicKey)):
        trusted_keys = [trusted_keys]
    checked = check(path, attestation, list(trusted_keys), min_signatures=min_signatures)
    if ledger is not None:
        from trainguard.ledger.ops import default_actor
        from trainguard.ledger.store import Ledger

        with Ledger.open(ledger) as led, led.transaction():
            led.add_training(file_sha256=checked.sha256, attestation_sha256=checked.attestation_sha256,
                             path=str(path), actor=by or default_actor())
    return checked


def hf_callback(path: str | Path, attestation: str | Path, trusted_keys: KeyLike | Iterable[KeyLike],
                **options: Any) -> Any:
    """A `transformers.TrainerCallback` that runs `require_release` at `on_train_begin`.

    The guard raises before the first optimiser step, so `Trainer.train()` aborts.
    Needs the optional `transformers` package.
    """
    try:
        from transformers import TrainerCallback
    except ImportError as e:
        raise ImportError("hf_callback needs `transformers` (pip install transformers)") from e

    class TrainGuardCallback(TrainerCallback):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self.release: CheckedRelease | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            self.release = require_release(path, attestation, trusted_keys, **options)
            return control

    return TrainGuardCallback()
