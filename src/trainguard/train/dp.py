"""DP-SGD settings and the opacus wiring.

DP-SGD clips every example's gradient to `max_grad_norm` and adds Gaussian
noise to the sum, so no single example (and no handful of poisoned ones) can
move the model far in one step; the accountant turns noise, sampling rate and
steps into the (epsilon, delta) the run spent.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trainguard.errors import ConfigError

ACCOUNTANTS = ("prv", "rdp")
CLIPPING_MODES = ("ghost", "hooks")


@dataclass(frozen=True)
class DPConfig:
    """Give a target `epsilon` (noise is calibrated to reach it) or a `noise_multiplier` (epsilon is measured)."""

    epsilon: float | None = 8.0
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    noise_multiplier: float | None = None
    accountant: str = "prv"
    # "ghost": opacus' fast gradient clipping, per-example norms without per-example gradients
    # (the embedding's would be batch x vocab x dim); "hooks": materialised per-example gradients.
    clipping_mode: str = "ghost"

    def __post_init__(self) -> None:
        if (self.epsilon is None) == (self.noise_multiplier is None):
            raise ConfigError("DP needs exactly one of epsilon (a target) or noise_multiplier")
        if self.epsilon is not None and not (_finite(self.epsilon) and self.epsilon > 0):
            raise ConfigError(f"epsilon must be a positive number, got {self.epsilon!r}")
        if self.noise_multiplier is not None and not (_finite(self.noise_multiplier) and self.noise_multiplier >= 0):
            raise ConfigError(f"noise_multiplier must be >= 0, got {self.noise_multiplier!r}")
        if not (_finite(self.delta) and 0 < self.delta < 1):
            raise ConfigError(f"delta must be in (0, 1), got {self.delta!r}")
        if not (_finite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ConfigError(f"max_grad_norm must be positive, got {self.max_grad_norm!r}")
        if self.accountant not in ACCOUNTANTS:
            raise ConfigError(f"accountant must be one of {ACCOUNTANTS}, got {self.accountant!r}")
        if self.clipping_mode not in CLIPPING_MODES:
            raise ConfigError(f"clipping_mode must be one of {CLIPPING_MODES}, got {self.clipping_mode!r}")

    def check_delta(self, n: int) -> None:
        """delta is the chance the guarantee fails outright; at >= 1/n it can fail for a whole row."""
        if self.delta >= 1.0 / n:
            raise ConfigError(f"delta {self.delta:g} is not below 1/n = 1/{n:,}; choose delta < {1.0 / n:.2g}")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def validate_module(module: nn.Module) -> nn.Module:
    """The module opacus can train, or a ConfigError naming what it cannot.

    ModuleValidator.fix swaps known-bad layers (BatchNorm to GroupNorm); if
    anything is still unsupported after that the run is refused, not silently
    trained without per-example clipping.
    """
    from opacus.validators import ModuleValidator

    if ModuleValidator.validate(module, strict=False):
        module = ModuleValidator.fix(module)
        errors = ModuleValidator.validate(module, strict=False)
        if errors:
            raise ConfigError("model cannot be trained with DP-SGD: " + "; ".join(str(e) for e in errors))
    return module


@dataclass
class PrivateRun:
    """What opacus hands back; `module` is the GradSampleModule wrapping the plain one."""

    engine: Any
    module: nn.Module
    optimizer: Any
    loader: Any
    criterion: Any  # ghost mode: opacus' loss wrapper that runs both backward passes
    noise_multiplier: float

    def epsilon(self, delta: float) -> float:
        with warnings.catch_warnings():  # RDP: "optimal order is the largest alpha" (a looser bound, still valid)
            warnings.filterwarnings("ignore", message=".*Optimal order is the (largest|smallest) alpha.*")
            return float(self.engine.get_epsilon(delta))


def make_private(module: nn.Module, optimizer: torch.optim.Optimizer, loader: torch.utils.data.DataLoader,
                 dp: DPConfig, epochs: int, criterion: nn.Module | None = None) -> PrivateRun:
    """Wrap model, optimizer and loader for DP-SGD with Poisson sampling and flat per-example clipping."""
    from opacus import PrivacyEngine

    criterion = criterion if criterion is not None else nn.CrossEntropyLoss()
    common = dict(module=module, optimizer=optimizer, data_loader=loader, max_grad_norm=dp.max_grad_norm,
                  poisson_sampling=True, clipping="flat", grad_sample_mode=dp.clipping_mode, criterion=criterion)
    with warnings.catch_warnings():
        # opacus warns that secure_mode is off: its RNG is not cryptographically secure, which
        # matters against an adversary who can predict the noise, not for the guarantee's arithmetic.
        warnings.filterwarnings("ignore", message=".*[Ss]ecure.*RNG.*")
        warnings.filterwarnings("ignore", message=".*secure_mode.*")
        warnings.filterwarnings("ignore", message=".*Optimal order is the (largest|smallest) alpha.*")
        engine = PrivacyEngine(accountant=dp.accountant)
        if dp.epsilon is not None:
            try:
                wrapped = engine.make_private_with_epsilon(
                    **common, target_epsilon=dp.epsilon, target_delta=dp.delta, epochs=epochs)
            except ValueError as e:  # opacus: no noise level reaches the target
                raise ConfigError(f"cannot reach epsilon {dp.epsilon:g} at delta {dp.delta:g}: {e}") from None
        else:
            wrapped = engine.make_private(**common, noise_multiplier=dp.noise_multiplier)
    if dp.clipping_mode == "ghost":
        mod, opt, crit, dl = wrapped
    else:
        (mod, opt, dl), crit = wrapped, criterion
    return PrivateRun(engine, mod, opt, dl, crit, float(opt.noise_multiplier))
