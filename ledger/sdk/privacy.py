"""Differential-privacy accounting for a run, with Google's dp-accounting (docs/sdk.md).

Each spend is ``steps`` compositions of the Poisson-subsampled Gaussian mechanism
(``PoissonSampledDpEvent(q, GaussianDpEvent(sigma))``); the run's epsilon at the declared delta
comes from an RDP accountant with dp-accounting's default orders, the same computation the
verifier replays from the recorded ``privacy.spend`` events (docs/event-types.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import version as _pkg_version
from typing import Any

from rlhf_ledger.core.errors import LedgerError

# dp-accounting (and numpy, which it needs) is imported when a run first accounts a spend, so a
# run that declares no privacy budget works where it is not installed (docs/sdk.md, "Imports").
ACCOUNTANT = "rdp"
LIBRARY = "dp-accounting"
MECHANISM = "poisson_subsampled_gaussian"


@lru_cache(maxsize=1)
def library_version() -> str:
    return _pkg_version("dp-accounting")


def _lib() -> Any:
    try:
        import dp_accounting
        import numpy  # noqa: F401 - dp-accounting's own dependency
        from dp_accounting.rdp import rdp_privacy_accountant
    except ImportError as e:
        raise ImportError(
            f"differential-privacy accounting needs the dp-accounting package ({e}); "
            "install it with: pip install 'rlhf-ledger[privacy]'"
        ) from None
    return dp_accounting, rdp_privacy_accountant


class PrivacyBudgetExceeded(LedgerError):
    """A spend would take the run's epsilon past its declared budget (nothing was spent)."""

    code = "privacy_budget_exceeded"

    def __init__(self, message: str, *, attempted: dict):
        super().__init__(message, where="privacy.spend")
        self.attempted = attempted


def _dp_event(noise_multiplier: float, sample_rate: float) -> Any:
    dp_accounting, _ = _lib()
    return dp_accounting.PoissonSampledDpEvent(sample_rate, dp_accounting.GaussianDpEvent(noise_multiplier))


@dataclass(frozen=True)
class Spend:
    noise_multiplier: float
    sample_rate: float
    steps: int


def replay_epsilon(spends: list[Spend], delta: float) -> float:
    """Epsilon at ``delta`` of the composition of every spend, from scratch."""
    dp_accounting, _ = _lib()
    acc = dp_accounting.rdp.RdpAccountant()
    for s in spends:
        acc.compose(_dp_event(s.noise_multiplier, s.sample_rate), s.steps)
    return float(acc.get_epsilon(delta))


class PrivacyAccountant:
    """Cumulative RDP accounting against a declared (epsilon, delta) budget."""

    def __init__(self, epsilon_budget: float | None, delta: float, *, enforce: bool = True):
        if not (0 < delta < 1):
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        if epsilon_budget is not None and not (epsilon_budget > 0 and math.isfinite(epsilon_budget)):
            raise ValueError(f"epsilon budget must be a positive finite number, got {epsilon_budget}")
        self.epsilon_budget = epsilon_budget
        self.delta = delta
        self.enforce = enforce and epsilon_budget is not None
        # The RDP of `steps` compositions is `steps` times the one-step RDP (exactly what
        # RdpAccountant.compose does), so the one-step vector is cached per (sigma, q): a spend
        # then costs one vector add and one epsilon conversion instead of a full recomputation
        # on the training thread. replay_epsilon() (the public accountant path) is the check.
        _, self._impl = _lib()
        import numpy as np  # a dependency of dp-accounting: present once _lib() succeeded

        self._np = np
        self._orders = np.asarray(self._impl.DEFAULT_RDP_ORDERS, dtype=float)
        self._rdp = np.zeros_like(self._orders)
        self._step_rdp: dict[tuple[float, float], Any] = {}
        self.spends: list[Spend] = []
        self.epsilon = 0.0

    def _check(self, noise_multiplier: float, sample_rate: float, steps: int) -> None:
        if not (noise_multiplier > 0 and math.isfinite(noise_multiplier)):
            raise ValueError(f"noise_multiplier must be positive, got {noise_multiplier}")
        if not (0 < sample_rate <= 1):
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        if type(steps) is not int or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")

    def _one_step(self, noise_multiplier: float, sample_rate: float) -> Any:
        key = (float(noise_multiplier), float(sample_rate))
        vec = self._step_rdp.get(key)
        if vec is None:
            vec = self._np.asarray(
                self._impl._compute_rdp_poisson_subsampled_gaussian(key[1], key[0], self._orders), dtype=float
            )
            self._step_rdp[key] = vec
        return vec

    def _after(self, noise_multiplier: float, sample_rate: float, steps: int) -> Any:
        self._check(noise_multiplier, sample_rate, steps)
        return self._rdp + steps * self._one_step(noise_multiplier, sample_rate)

    def body(self, noise_multiplier: float, sample_rate: float, steps: int, epsilon: float) -> dict:
        return {
            "accountant": ACCOUNTANT,
            "library": LIBRARY,
            "library_version": library_version(),
            "mechanism": MECHANISM,
            "noise_multiplier": float(noise_multiplier),
            "sample_rate": float(sample_rate),
            "steps": steps,
            "delta": float(self.delta),
            "epsilon": epsilon,
        }

    def spend(self, noise_multiplier: float, sample_rate: float, steps: int) -> dict:
        """Account ``steps`` more steps; return the ``privacy.spend`` body.

        Raises :class:`PrivacyBudgetExceeded` (and spends nothing) when enforcement is on and the
        cumulative epsilon would exceed the budget.
        """
        total = self._after(noise_multiplier, sample_rate, steps)
        eps = float(self._impl.compute_epsilon(self._orders, total, self.delta)[0])
        if self.enforce and self.epsilon_budget is not None and eps > self.epsilon_budget:
            attempted = self.body(noise_multiplier, sample_rate, steps, eps)
            attempted["declared_epsilon"] = self.epsilon_budget
            attempted["epsilon_before"] = self.epsilon
            raise PrivacyBudgetExceeded(
                f"spending {steps} step(s) at sigma={noise_multiplier}, q={sample_rate} would bring epsilon to "
                f"{eps:.4f} > declared budget {self.epsilon_budget} at delta={self.delta}",
                attempted=attempted,
            )
        self._rdp = total
        self.spends.append(Spend(float(noise_multiplier), float(sample_rate), steps))
        self.epsilon = eps
        return self.body(noise_multiplier, sample_rate, steps, eps)
