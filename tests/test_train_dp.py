"""DP-SGD through opacus: the accountant's epsilon is reported and per-example clipping is on."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trainguard.errors import ConfigError
from trainguard.train import DPConfig, Vocab, build_model, train_classifier
from trainguard.train.dp import make_private, validate_module

# opacus' hooks fire on module outputs only: the inputs are token ids, which have no gradient.

pytestmark = [pytest.mark.filterwarnings("ignore:Full backward hook is firing"),
              pytest.mark.usefixtures("one_torch_thread")]



def test_dp_run_reports_finite_epsilon_within_target(sst2_rows):
    texts = [r["text"] for r in sst2_rows[:400]]
    labels = [r["label"] for r in sst2_rows[:400]]
    dp = DPConfig(epsilon=4.0, delta=1e-4, max_grad_norm=0.5, accountant="rdp")  # prv calibrates slowly
    result = train_classifier(texts, labels, model="linear", epochs=3, batch_size=32, dp=dp, progress=False)
    eps = [h.epsilon for h in result.history]
    assert all(e is not None and math.isfinite(e) for e in eps)
    assert eps == sorted(eps) and eps[0] < eps[-1]  # privacy spent grows every epoch
    assert 0.5 * dp.epsilon < result.epsilon <= dp.epsilon * 1.01  # calibrated to the target, not past it
    assert result.noise_multiplier > 0 and result.delta == 1e-4 and result.max_grad_norm == 0.5
    assert result.classifier.training["epsilon"] == result.epsilon
    # the trained module is the plain one again: no opacus hooks or per-sample attributes left behind
    module = result.classifier.module
    assert not any(hasattr(p, "grad_sample") for p in module.parameters())
    assert not module._forward_hooks and all(not m._forward_hooks for m in module.modules())


def test_fixed_noise_measures_epsilon_and_more_noise_spends_less(sst2_rows):
    texts = [r["text"] for r in sst2_rows[:300]]
    labels = [r["label"] for r in sst2_rows[:300]]
    runs = [train_classifier(texts, labels, model="linear", epochs=1, batch_size=30, progress=False, seed=5,
                             dp=DPConfig(epsilon=None, noise_multiplier=s, delta=1e-4)) for s in (0.8, 2.0, 0.8)]
    assert runs[0].epsilon > runs[1].epsilon > 0
    # same seed, same DP run: Poisson batches and noise are seeded too
    a, b = (r.classifier.module.state_dict() for r in (runs[0], runs[2]))
    assert runs[0].epsilon == runs[2].epsilon and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
@pytest.mark.parametrize("model", ["linear", "textcnn"])
def test_per_example_gradients_are_clipped_to_max_grad_norm(mode, model):
    """With zero noise the step's gradient must equal the sum of each example's clipped gradient."""
    from opacus import GradSampleModule
    from opacus.grad_sample import GradSampleModuleFastGradientClipping

    torch.manual_seed(0)
    texts = ["a fine film", "a dull mess of a film", "fine", "dull dull dull", "cf a film", "mess"]
    vocab = Vocab.build(texts)
    ids, y = vocab.encode(texts, 8), torch.tensor([1, 0, 1, 0, 1, 0])
    options = {"dropout": 0.0} if model == "textcnn" else {}
    module = build_model({"name": model, "vocab_size": len(vocab), "num_classes": 2, **options})
    plain = copy.deepcopy(module)
    bound = 1e-3  # far below any raw per-example norm, so every example is clipped
    loader = DataLoader(TensorDataset(ids, y), batch_size=3)
    run = make_private(module, torch.optim.SGD(module.parameters(), lr=0.1), loader,
                       DPConfig(epsilon=None, noise_multiplier=0.0, delta=1e-3, max_grad_norm=bound,
                                clipping_mode=mode), epochs=1)
    wrapper = GradSampleModuleFastGradientClipping if mode == "ghost" else GradSampleModule
    assert type(run.module) is wrapper  # opacus' per-sample machinery is in the loop

    loss_fn = nn.CrossEntropyLoss()
    expected = [torch.zeros_like(p) for p in plain.parameters()]
    raw_norms = []
    for i in range(len(texts)):
        plain.zero_grad()
        loss_fn(plain(ids[i : i + 1]), y[i : i + 1]).backward()
        grads = [p.grad.clone() for p in plain.parameters()]
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        raw_norms.append(float(norm))
        for e, g in zip(expected, grads):
            e += g * min(1.0, bound / (float(norm) + 1e-6))
    assert min(raw_norms) > 10 * bound

    run.optimizer.zero_grad()
    run.criterion(run.module(ids), y).backward()
    run.optimizer.pre_step()  # clip, accumulate, add (zero) noise, scale by the expected batch size
    got = [p.grad for p in run.module.parameters()]
    scale = run.optimizer.expected_batch_size
    for g, e in zip(got, expected):
        assert torch.allclose(g * scale, e, atol=1e-7, rtol=1e-3)
    total = math.sqrt(sum(float((g * scale).pow(2).sum()) for g in got))
    assert total <= len(texts) * bound * (1 + 1e-4)


def test_dp_config_is_validated():
    with pytest.raises(ConfigError, match="exactly one of epsilon"):
        DPConfig(epsilon=8.0, noise_multiplier=1.0)
    with pytest.raises(ConfigError, match="epsilon must be a positive"):
        DPConfig(epsilon=0.0)
    with pytest.raises(ConfigError, match="delta must be in"):
        DPConfig(delta=1.5)
    with pytest.raises(ConfigError, match="max_grad_norm"):
        DPConfig(max_grad_norm=-1)
    with pytest.raises(ConfigError, match="not below 1/n"):
        train_classifier(["a", "b", "c"], [0, 1, 0], dp=DPConfig(delta=0.5), progress=False)


def test_module_validator_fixes_batchnorm_and_refuses_the_unfixable(monkeypatch):
    from opacus.validators import ModuleValidator

    fixed = validate_module(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)))
    assert not any(isinstance(m, nn.BatchNorm1d) for m in fixed.modules())
    monkeypatch.setattr(ModuleValidator, "validate", staticmethod(lambda module, strict=False: ["no grad sampler"]))
    with pytest.raises(ConfigError, match="cannot be trained with DP-SGD: no grad sampler"):
        validate_module(nn.Linear(2, 2))


def test_textcnn_dp_preset_learns_a_separable_task():
    """Kim's TextCNN stayed at the majority class under DP noise; the DP preset must learn a task a word decides."""
    from test_train import toy

    texts, labels = toy(1000, seed=1)
    test_texts, test_labels = toy(300, seed=2)
    # fixed noise (what epsilon 8 calibrates to here) skips the calibration search: the test stays fast
    dp = DPConfig(epsilon=None, noise_multiplier=0.7, delta=1e-4, accountant="rdp")
    result = train_classifier(texts, labels, model="textcnn", epochs=2, batch_size=100, dp=dp, progress=False)
    module = result.classifier.module
    assert (module.activation, module.pool, module.norm.num_groups, module.dropout.p) == ("tanh", "mean", 4, 0.0)
    assert result.settings["lr"] == 0.1 and result.settings["batch_size"] == 100  # the caller's batch size wins
    assert 1.0 < result.epsilon < 20.0 and result.noise_multiplier == 0.7
    assert result.classifier.accuracy(test_texts, test_labels) >= 0.9


def test_dp_preset_applies_only_under_dp_and_yields_to_the_caller(sst2_rows):
    texts, labels = [r["text"] for r in sst2_rows[:200]], [r["label"] for r in sst2_rows[:200]]
    plain = train_classifier(texts, labels, model="textcnn", epochs=1, progress=False)
    assert plain.settings["batch_size"] == 64 and plain.settings["lr"] == 2e-3
    assert plain.classifier.module.config()["activation"] == "relu"  # Kim's model without DP, as before
    dp = DPConfig(epsilon=None, noise_multiplier=1.0, delta=1e-3, accountant="rdp")
    mine = train_classifier(texts, labels, model="textcnn", epochs=1, progress=False, dp=dp, lr=0.01,
                            model_options={"filters": 8, "pool": "max+mean"})
    cfg = mine.classifier.module.config()
    assert (cfg["filters"], cfg["pool"], cfg["activation"], cfg["embed_dim"]) == (8, "max+mean", "tanh", 16)
    assert mine.settings["lr"] == 0.01 and mine.settings["batch_size"] == 1024


def test_training_leaves_the_callers_torch_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_classifier(["good film", "bad film"] * 10, [1, 0] * 10, model="textcnn", epochs=1, seed=9, progress=False)
    assert torch.equal(torch.rand(3), expected)
