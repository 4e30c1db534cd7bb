"""Small text classifiers: vocabulary, models, save/load without pickle, training."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from trainguard.errors import ConfigError, DataError
from trainguard.train import LinearBoW, TextClassifier, TextCNN, Vocab, train_classifier
from trainguard.train.classifier import FILES
from trainguard.train.vocab import PAD_ID, UNK_ID


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def toy(n: int, seed: int) -> tuple[list[str], list[int]]:
    """Label is decided by one of two marker words hidden among random filler."""
    rng = random.Random(seed)
    filler = [f"w{i}" for i in range(40)]
    texts, labels = [], []
    for _ in range(n):
        y = rng.randrange(2)
        words = rng.sample(filler, 6)
        words.insert(rng.randrange(7), "bright" if y else "gloomy")
        texts.append(" ".join(words))
        labels.append(y)
    return texts, labels


def test_vocab_counts_order_and_json_round_trip():
    v = Vocab.build(["b a a", "a c", "rare"], min_count=2)
    assert v.itos == ["<pad>", "<unk>", "a"]  # b, c, rare occur once
    v = Vocab.build(["b a a", "a c b"], max_size=4)
    assert v.itos == ["<pad>", "<unk>", "a", "b"]  # by count, then alphabetically; cut at max_size
    again = Vocab.from_dict(json.loads(json.dumps(v.to_dict())))
    assert again.itos == v.itos
    ids = again.encode(["A b zzz", "", "b b b b b b"], max_len=4)
    assert ids.dtype == torch.long and ids.shape == (3, 4)
    assert ids[0].tolist() == [2, 3, UNK_ID, PAD_ID]  # lowercased; unknown word -> <unk>; right padded
    assert ids[1].tolist() == [PAD_ID] * 4
    assert ids[2].tolist() == [3] * 4  # truncated at max_len


def test_vocab_rejects_bad_json():
    with pytest.raises(ConfigError, match="not a trainguard vocabulary"):
        Vocab.from_dict({"tokens": ["<pad>", "<unk>"]})
    with pytest.raises(ConfigError, match="must start with"):
        Vocab.from_dict({"format": "trainguard.vocab/1", "tokens": ["a", "<pad>", "<unk>"]})


@pytest.mark.parametrize("cls", [LinearBoW, TextCNN])
def test_forward_embeds_matches_forward_and_gives_input_gradients(cls):
    torch.manual_seed(0)
    m = cls(vocab_size=20, num_classes=3).eval()
    ids = torch.tensor([[2, 3, 4, 0, 0, 0], [5, 6, 7, 8, 9, 10]])
    embeds, mask = m.embed(ids)
    embeds = embeds.detach().requires_grad_(True)
    out = m.forward_embeds(embeds, mask)
    assert torch.allclose(out, m(ids))
    out[:, 0].sum().backward()
    assert embeds.grad is not None and embeds.grad[1].abs().sum() > 0
    assert isinstance(m.embedding, torch.nn.Embedding)


@pytest.mark.parametrize("pool", ["mean", "max+mean"])
def test_textcnn_dp_variant_forward_embeds_and_padding(pool):
    """The DP-friendly variant (tanh, mean pooling, GroupNorm) keeps the prober's API and ignores batch padding."""
    torch.manual_seed(0)
    m = TextCNN(vocab_size=20, num_classes=2, embed_dim=8, filters=4, activation="tanh", pool=pool, groups=4,
                dropout=0.0).eval()
    ids = torch.tensor([[2, 3, 0, 0, 0, 0, 0], [5, 6, 7, 8, 9, 10, 11]])
    embeds, mask = m.embed(ids)
    assert torch.allclose(m.forward_embeds(embeds, mask), m(ids))
    assert torch.allclose(m(ids)[:1], m(ids[:1, :2]), atol=1e-6)  # a text's logits do not depend on its batch
    assert m(torch.tensor([[0]])).shape == (1, 2)  # an all-pad text still gets a window


def test_textcnn_options_round_trip_and_bad_ones_are_refused(tmp_path):
    from trainguard.train import build_model

    m = TextCNN(vocab_size=30, num_classes=2, embed_dim=8, filters=6, activation="tanh", pool="mean", groups=3)
    assert build_model(m.config()).config() == m.config()
    old = {k: v for k, v in m.config().items() if k not in ("activation", "pool", "groups")}
    assert build_model(old).config()["activation"] == "relu"  # configs saved before these options load as Kim's
    for bad, message in [({"activation": "gelu"}, "activation must be one of"), ({"pool": "sum"}, "pool must be"),
                         ({"groups": 5}, "groups must be 0")]:
        with pytest.raises(ConfigError, match=message):
            TextCNN(vocab_size=30, num_classes=2, filters=6, **bad)


def test_linear_mean_ignores_padding():
    m = LinearBoW(vocab_size=10, num_classes=2).eval()
    short = m(torch.tensor([[2, 3]]))
    padded = m(torch.tensor([[2, 3, 0, 0, 0]]))
    assert torch.allclose(short, padded, atol=1e-6)


def test_training_learns_a_separable_task():
    texts, labels = toy(400, seed=1)
    test_texts, test_labels = toy(200, seed=2)
    result = train_classifier(texts, labels, model="linear", epochs=8, batch_size=32, seed=0, progress=False)
    assert result.classifier.accuracy(test_texts, test_labels) >= 0.95
    assert result.history[-1].loss < result.history[0].loss
    assert result.epsilon is None and result.classifier.labels == ["0", "1"]
    p = result.classifier.predict_proba(["bright w1 w2", "gloomy w1 w2"])
    assert p.shape == (2, 2) and np.allclose(p.sum(axis=1), 1.0)
    assert p[0, 1] > 0.9 and p[1, 0] > 0.9


def test_same_seed_same_model(sst2_rows):
    texts = [r["text"] for r in sst2_rows[:300]]
    labels = [r["label"] for r in sst2_rows[:300]]
    a = train_classifier(texts, labels, model="textcnn", epochs=1, seed=3, progress=False)
    b = train_classifier(texts, labels, model="textcnn", epochs=1, seed=3, progress=False)
    c = train_classifier(texts, labels, model="textcnn", epochs=1, seed=4, progress=False)
    sa, sb, sc = (r.classifier.module.state_dict() for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_save_load_round_trip_identical_predictions_no_pickle(tmp_path, sst2_rows):
    texts = [r["text"] for r in sst2_rows[:300]]
    labels = [r["label"] for r in sst2_rows[:300]]
    clf = train_classifier(texts, labels, model="textcnn", epochs=1, seed=0, progress=False).classifier
    out = clf.save(tmp_path / "model")
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    for p in out.iterdir():  # no pickle stream anywhere (pickle protocol 2+ starts with 0x80)
        assert not p.read_bytes().startswith(b"\x80")
    back = TextClassifier.load(out)
    probe = [r["text"] for r in sst2_rows[300:400]] + ["", "cf mn zzz unseen words"]
    assert np.array_equal(clf.predict_proba(probe), back.predict_proba(probe))
    assert back.labels == clf.labels and back.vocab.itos == clf.vocab.itos
    assert back.training["model"] == "textcnn"


def test_load_refuses_what_is_not_a_trainguard_model(tmp_path, sst2_rows):
    with pytest.raises(ConfigError, match="not a directory"):
        TextClassifier.load(tmp_path / "nothing")
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "pytorch_model.bin").write_bytes(b"\x80\x04junk")
    with pytest.raises(ConfigError, match=r"missing .*pytorch_model.bin.*never loads"):
        TextClassifier.load(hf)
    texts = [r["text"] for r in sst2_rows[:100]]
    clf = train_classifier(texts, [r["label"] for r in sst2_rows[:100]], model="linear", epochs=1,
                           progress=False).classifier
    good = clf.save(tmp_path / "good")
    (good / "extra.pt").write_bytes(b"\x80\x04")
    with pytest.raises(ConfigError, match="pickle files"):
        TextClassifier.load(good)
    (good / "extra.pt").unlink()
    cfg = json.loads((good / "config.json").read_text())
    cfg["model"]["embed_dim"] = 7
    (good / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DataError, match="tensor shape"):
        TextClassifier.load(good)
    (good / "config.json").write_text("{not json")
    with pytest.raises(DataError, match="config.json: not valid JSON"):
        TextClassifier.load(good)
    (good / "config.json").write_text(json.dumps({**cfg, "model": {**cfg["model"], "name": "os.system"}}))
    with pytest.raises(DataError, match="unknown model 'os.system'"):
        TextClassifier.load(good)
    (good / "model.safetensors").write_bytes(b"garbage")
    (good / "config.json").write_text(json.dumps({**cfg, "model": {**cfg["model"], "embed_dim": 64}}))
    with pytest.raises(DataError, match="model.safetensors: not a readable safetensors file"):
        TextClassifier.load(good)


@pytest.mark.parametrize("kwargs, message", [
    ({"model": "lstm"}, "unknown model"),
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"lr": -1.0}, "lr must be a positive number"),
    ({"eval_texts": ["a"]}, "give both eval_texts and eval_labels"),
])
def test_bad_training_arguments_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        train_classifier(["a b", "c d"], [0, 1], progress=False, **kwargs)


def test_single_label_is_refused():
    with pytest.raises(ConfigError, match="at least 2 distinct labels"):
        train_classifier(["a", "b"], [1, 1], progress=False)
