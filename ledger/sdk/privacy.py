"""Differential-privacy accounting for a run, with Google's dp-accounting (docs/sdk.md).

Each spend is ``steps`` compositions of the Poisson-subsampled Gaussian mechanism
(``PoissonSampledDpEvent(q, GaussianDpEvent(sigma))``); the run's epsilon at the declared delta
comes from an RDP accountant with dp-accounting's default orders, the same computation the
verifier replays from the recorded ``privacy.spend`` events (docs/event-types.md).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from importlib.metadata import version as _pkg_version

import dp_accounting
from dp_accounting import rdp

from ..errors import LedgerError

ACCOUNTANT = "rdp"
LIBRARY = "dp-accounting"
MECHANISM = "poisson_subsampled_gaussian"
LIBRARY_VERSION = _pkg_version("dp-accounting")


class PrivacyBudgetExceeded(LedgerError):
    """A spend would take the run's epsilon past its declared budget (nothing was spent)."""

    code = "privacy_budget_exceeded"

    def __init__(self, message: str, *, attempted: dict):
        super().__init__(message, where="privacy.spend")
        self.attempted = attempted


def _dp_event(noise_multiplier: float, sample_rate: float) -> dp_accounting.DpEvent:
    return dp_accounting.PoissonSampledDpEvent(sample_rate, dp_accounting.GaussianDpEvent(noise_multiplier))


@dataclass(frozen=True)
class Spend:
    noise_multiplier: float
    sample_rate: float
    steps: int


def replay_epsilon(spends: list[Spend], delta: float) -> float:
    """Epsilon at ``delta`` of the composition of every spend, from scratch."""
    acc = rdp.RdpAccountant()
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
        self._acc = rdp.RdpAccountant()
        self.spends: list[Spend] = []
        self.epsilon = 0.0

    def _check(self, noise_multiplier: float, sample_rate: float, steps: int) -> None:
        if not (noise_multiplier > 0 and math.isfinite(noise_multiplier)):
            raise ValueError(f"noise_multiplier must be positive, got {noise_multiplier}")
        if not (0 < sample_rate <= 1):
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        if type(steps) is not int or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")

    def preview(self, noise_multiplier: float, sample_rate: float, steps: int) -> float:
        """The cumulative epsilon this spend would lead to, without spending."""
        self._check(noise_multiplier, sample_rate, steps)
        acc = copy.deepcopy(self._acc)
        acc.compose(_dp_event(noise_multiplier, sample_rate), steps)
        return float(acc.get_epsilon(self.delta))

    def body(self, noise_multiplier: float, sample_rate: float, steps: int, epsilon: float) -> dict:
        return {
            "accountant": ACCOUNTANT,
            "library": LIBRARY,
            "library_version": LIBRARY_VERSION,
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
        eps = self.preview(noise_multiplier, sample_rate, steps)
        if self.enforce and self.epsilon_budget is not None and eps > self.epsilon_budget:
            attempted = self.body(noise_multiplier, sample_rate, steps, eps)
            attempted["declared_epsilon"] = self.epsilon_budget
            attempted["epsilon_before"] = self.epsilon
            raise PrivacyBudgetExceeded(
                f"spending {steps} step(s) at sigma={noise_multiplier}, q={sample_rate} would bring epsilon to "
                f"{eps:.4f} > declared budget {self.epsilon_budget} at delta={self.delta}",
                attempted=attempted,
            )
        self._acc.compose(_dp_event(noise_multiplier, sample_rate), steps)
        self.spends.append(Spend(float(noise_multiplier), float(sample_rate), steps))
        self.epsilon = eps
        return self.body(noise_multiplier, sample_rate, steps, eps)
