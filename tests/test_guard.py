"""The training guard refuses a dataset one byte different from its attestation, before training starts."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trainguard.attest import generate, load_private
from trainguard.attest.statement import file_sha256, sign_statement, statement
from trainguard.guard import AttestationError, hf_callback, require_release
from trainguard.ledger import Ledger
from trainguard.ledger.audit import audit

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture()
def released(tmp_path):
    """A small released dataset (SST-2 slice) with an attestation signed by a fresh key."""
    src = Path(__file__).parent / "data" / "sst2_sample.jsonl"
    data = tmp_path / "approved.jsonl"
    data.write_bytes(b"".join(src.read_bytes().splitlines(keepends=True)[:400]))
    priv, pub = generate(tmp_path / "keys")
    env = sign_statement(statement(data.name, file_sha256(data), {"tool": "test"}), [load_private(priv)])
    att = tmp_path / "approved.intoto.json"
    att.write_text(json.dumps(env))
    return data, att, pub


def flip_one_byte(path: Path, at: int = 20) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] = ord("X") if raw[at] != ord("X") else ord("Y")
    path.write_bytes(bytes(raw))


def numpy_training(path: Path, attestation: Path, keys, steps: list[int]) -> list[float]:
    """A real (tiny) logistic-regression loop; `steps` counts optimiser steps taken."""
    require_release(path, attestation, keys)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    dim = 128
    x = np.zeros((len(rows), dim))
    for i, r in enumerate(rows):
        for w in r["text"].split():
            x[i, sum(w.encode()) % dim] += 1
    y = np.array([int(r["label"]) for r in rows], dtype=float)
    wts = np.zeros(dim)
    losses = []
    for _ in range(20):
        p = 1 / (1 + np.exp(-x @ wts))
        losses.append(float(-np.mean(y * np.log(p + 1e-9) + (1 - y) * np.log(1 - p + 1e-9))))
        wts -= 0.1 * x.T @ (p - y) / len(rows)
        steps.append(1)
    return losses


def test_guard_allows_the_attested_dataset_and_training_runs(released):
    data, att, pub = released
    steps: list[int] = []
    losses = numpy_training(data, att, [pub], steps)
    assert len(steps) == 20 and losses[-1] < losses[0]


def test_guard_refuses_one_changed_byte_before_any_step(released):
    data, att, pub = released
    flip_one_byte(data)
    steps: list[int] = []
    with pytest.raises(AttestationError, match="differs from the attested release"):
        numpy_training(data, att, [pub], steps)
    assert steps == []


def test_guard_refuses_untrusted_key(released):
    data, att, _ = released
    with pytest.raises(AttestationError, match="none of which is trusted"):
        require_release(data, att, Ed25519PrivateKey.generate().public_key())


def test_guard_records_training_runs_for_audit(released, tmp_path):
    data, att, pub = released
    db = tmp_path / "l.db"
    require_release(data, att, pub, ledger=db, by="trainer-job")
    with Ledger.open(db) as led:
        assert led.trainings()[0]["by"] == "trainer-job"
        res = audit(led)
    # the ledger holds no release matching this file, so audit question 3 flags the run
    assert any(f["question"] == "review-step" and "matches no recorded release" in f["message"]
               for f in res["findings"])


def test_hf_callback_runs_the_guard_on_train_begin(released, monkeypatch):
    data, att, pub = released
    fake = types.ModuleType("transformers")

    class TrainerCallback:  # the real base class only provides no-op event methods
        pass

    fake.TrainerCallback = TrainerCallback
    monkeypatch.setitem(sys.modules, "transformers", fake)
    cb = hf_callback(data, att, [pub])
    assert isinstance(cb, TrainerCallback)
    control = object()
    assert cb.on_train_begin(None, None, control) is control and cb.release.sha256 == file_sha256(data)
    flip_one_byte(data)
    with pytest.raises(AttestationError):
        hf_callback(data, att, [pub]).on_train_begin(None, None, control)


def test_hf_callback_without_transformers_says_what_to_install(released, monkeypatch):
    data, att, pub = released
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match="pip install transformers"):
        hf_callback(data, att, [pub])


def _example():
    spec = importlib.util.spec_from_file_location("train_torch_example", EXAMPLES / "train_torch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_torch_example_trains_on_release_and_refuses_tampered_data(released, monkeypatch, capsys):
    pytest.importorskip("torch")
    data, att, pub = released
    ex = _example()
    assert ex.main([str(data), str(att), "--trusted-key", str(pub), "--epochs", "15"]) == 0
    out = capsys.readouterr().out
    first, last = (float(v) for v in out.split("loss ")[1].split(" -> "))
    assert last < first
    calls: list[int] = []
    monkeypatch.setattr(ex, "train", lambda *a, **k: calls.append(1))
    flip_one_byte(data)
    assert ex.main([str(data), str(att), "--trusted-key", str(pub)]) == 1
    assert calls == [] and "refusing to train" in capsys.readouterr().err
