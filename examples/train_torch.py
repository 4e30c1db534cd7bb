"""Train a tiny PyTorch classifier on a released dataset, and only on a released dataset.

    python examples/train_torch.py approved.jsonl approved.intoto.json --trusted-key keys/trainguard.pub

The guard runs before any data reaches the model: a dataset one byte different
from its attestation, an attestation signed by another key, or an edited
attestation stops the script with the reason (exit 1). The records are read
from the bytes that were verified, so the file cannot be swapped in between.
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from pathlib import Path

import torch
from torch import nn

from trainguard.guard import AttestationError, require_release

DIM = 256


def load_verified(path: str | Path, attestation: str | Path, trusted_keys: list[str]) -> list[dict]:
    """Verify, then parse the very bytes whose digest was checked."""
    import hashlib

    raw = Path(path).read_bytes()
    release = require_release(path, attestation, trusted_keys)
    if hashlib.sha256(raw).hexdigest() != release.sha256:
        raise AttestationError(f"{path} changed while it was being verified")
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def featurise(rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Hashed bag of words: enough signal for a smoke-test model."""
    x = torch.zeros(len(rows), DIM)
    for i, r in enumerate(rows):
        for w in str(r["text"]).lower().split():
            x[i, zlib.crc32(w.encode()) % DIM] += 1.0
    y = torch.tensor([float(int(r["label"])) for r in rows])
    return x, y


def train(rows: list[dict], epochs: int = 30, seed: int = 0) -> tuple[nn.Module, list[float]]:
    torch.manual_seed(seed)
    x, y = featurise(rows)
    model = nn.Linear(DIM, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for _ in range(epochs):
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, losses


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("attestation")
    ap.add_argument("--trusted-key", action="append", required=True)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args(argv)
    try:
        rows = load_verified(args.data, args.attestation, args.trusted_key)
    except AttestationError as e:
        print(f"refusing to train: {e}", file=sys.stderr)
        return 1
    _, losses = train(rows, args.epochs)
    print(f"trained on {len(rows)} records; loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
