"""`trainguard train`: exit codes, DP figures in the output, clear errors on bad input."""

from __future__ import annotations

import json

import pytest

from conftest import DATA, cli

from trainguard.train import TextClassifier


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _slice(tmp_path, name: str, start: int, stop: int):
    lines = (DATA / "sst2_sample.jsonl").read_text(encoding="utf-8").splitlines()[start:stop]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_train_json_with_dp_and_eval(tmp_path, capsys):
    train, dev = _slice(tmp_path, "train.jsonl", 0, 300), _slice(tmp_path, "dev.jsonl", 300, 400)
    out = tmp_path / "model"
    code, stdout, err = cli(capsys, "train", train, "--model", "linear", "--epochs", "2", "--out", out,
                            "--dp", "--epsilon", "8", "--delta", "1e-4", "--max-grad-norm", "0.5", "--accountant", "rdp",
                            "--eval", dev, "--format", "json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["dp"] is True and 0 < summary["epsilon"] <= 8.0 * 1.01
    assert summary["delta"] == 1e-4 and summary["max_grad_norm"] == 0.5 and summary["noise_multiplier"] > 0
    assert 0.0 <= summary["eval_accuracy"] <= 1.0 and len(summary["history"]) == 2
    clf = TextClassifier.load(out)
    assert clf.labels == ["0", "1"] and clf.training["dp"]["max_grad_norm"] == 0.5


def test_train_table_without_dp(tmp_path, capsys):
    train = _slice(tmp_path, "train.jsonl", 0, 200)
    code, stdout, err = cli(capsys, "train", train, "--model", "textcnn", "--epochs", "1", "--out",
                            tmp_path / "m", "--no-progress")
    assert code == 0, err
    assert "train accuracy:" in stdout and "DP-SGD: off" in stdout and "epsilon = inf" in stdout
    # Without --eval a seeded 10 % of each label is held out, so the accuracy shown is not the training one.
    assert "held-out accuracy:" in stdout and "20 rows held out" in stdout
    assert "on 180 rows" in stdout


def test_train_holdout_zero_says_accuracy_is_unmeasured(tmp_path, capsys):
    train = _slice(tmp_path, "train.jsonl", 0, 60)
    code, stdout, err = cli(capsys, "train", train, "--model", "linear", "--epochs", "1", "--out",
                            tmp_path / "m", "--no-progress", "--holdout", "0")
    assert code == 0, err
    assert "on 60 rows" in stdout and "held-out accuracy: not measured" in stdout
    assert cli(capsys, "train", train, "--out", tmp_path / "m2", "--holdout", "0.7")[0] == 2


def test_train_bad_row_names_file_line_and_field(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": 1}\n{"text": "dull", "label": 0}\n{"text": "oops"}\n')
    code, _, err = cli(capsys, "train", bad, "--out", tmp_path / "m")
    assert code == 2
    assert "bad.jsonl" in err and "line 3" in err and "label" in err
    assert not (tmp_path / "m").exists()


def test_train_usage_errors_exit_2(tmp_path, capsys):
    train = _slice(tmp_path, "train.jsonl", 0, 50)
    assert cli(capsys, "train", train, "--out", tmp_path / "m", "--model", "lstm")[0] == 2
    code, _, err = cli(capsys, "train", train, "--out", tmp_path / "m", "--epsilon", "3")
    assert code == 2 and "need --dp" in err
    code, _, err = cli(capsys, "train", train, "--out", tmp_path / "m", "--dp", "--delta", "0.1")
    assert code == 2 and "not below 1/n" in err
    code, _, err = cli(capsys, "train", train, "--out", tmp_path / "m", "--embed-dim", "0")
    assert code == 2 and "embed_dim must be a positive integer" in err
    code, _, err = cli(capsys, "train", tmp_path / "missing.jsonl", "--out", tmp_path / "m")
    assert code == 2 and "missing.jsonl" in err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    code, _, err = cli(capsys, "train", train, "--out", busy)
    assert code == 2 and "not a trainguard model" in err
    dev = tmp_path / "dev.jsonl"
    dev.write_text('{"text": "fine", "label": 7}\n')
    code, _, err = cli(capsys, "train", train, "--out", tmp_path / "m", "--eval", dev)
    assert code == 2 and "dev.jsonl, row 0" in err and "'7'" in err


def test_train_textcnn_dp_uses_the_dp_preset_unless_told_otherwise(tmp_path, capsys):
    train = _slice(tmp_path, "train.jsonl", 0, 200)
    code, stdout, err = cli(capsys, "train", train, "--model", "textcnn", "--epochs", "1", "--out", tmp_path / "m",
                            "--dp", "--noise-multiplier", "1.0", "--delta", "1e-3", "--accountant", "rdp",
                            "--format", "json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["settings"]["batch_size"] == 1024 and summary["settings"]["lr"] == 0.1
    assert summary["settings"]["max_vocab"] == 5000
    cfg = TextClassifier.load(tmp_path / "m").module.config()
    assert (cfg["activation"], cfg["pool"], cfg["embed_dim"], cfg["groups"]) == ("tanh", "mean", 16, 4)
    code, stdout, err = cli(capsys, "train", train, "--model", "textcnn", "--epochs", "1", "--out", tmp_path / "m2",
                            "--dp", "--noise-multiplier", "1.0", "--delta", "1e-3", "--accountant", "rdp",
                            "--embed-dim", "8", "--batch-size", "50", "--lr", "0.01", "--format", "json")
    assert code == 0, err
    assert json.loads(stdout)["settings"]["batch_size"] == 50
    assert TextClassifier.load(tmp_path / "m2").module.config()["embed_dim"] == 8
