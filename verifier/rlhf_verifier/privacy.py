"""RDP accountant for the Poisson-subsampled Gaussian mechanism (no numpy/scipy).

Follows Mironov, Talwar, Zhang, "Renyi Differential Privacy of the Sampled Gaussian
Mechanism" (2019): A_alpha for integer orders by the binomial expansion (Sec. 3.2) and for
fractional orders by the two-sided series with erfc tails (Sec. 3.3), as TF-privacy and
dp-accounting compute them; RDP at order alpha is log(A_alpha)/(alpha-1). Conversion to
(epsilon, delta) uses the bound dp-accounting 0.6.0 uses (Canonne-Kamath-Steinke 2020,
Prop. 12 / Asoodeh et al. 2020 eq. 20):
    epsilon = min_alpha  rdp + log1p(-1/alpha) - log(delta*alpha)/(alpha-1)   (alpha > 1.01)
with the KL shortcut epsilon = 0 when delta^2 + expm1(-rdp) > 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

# dp-accounting 0.6.0's RdpAccountant default orders.
DEFAULT_ORDERS: tuple[float, ...] = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64))
                                          + [128, 256, 512, 1024])
_MAX_FRAC_TERMS = 1000


def _log_add(a: float, b: float) -> float:
    lo, hi = min(a, b), max(a, b)
    if lo == -math.inf:
        return hi
    return math.log1p(math.exp(lo - hi)) + hi


def _log_comb(n: float, k: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _log_erfc(x: float) -> float:
    """log(erfc(x)), accurate in the far tail where erfc underflows."""
    r = math.erfc(x)
    if r > 1e-300:
        return math.log(r)
    # Asymptotic series of log erfc at +infinity.
    return (-math.log(math.pi) / 2 - math.log(x) - x * x - 0.5 * x**-2 + 0.625 * x**-4
            - 37.0 / 24.0 * x**-6 + 353.0 / 64.0 * x**-8)


def _log_a_int(q: float, sigma: float, alpha: int) -> float:
    log_a = -math.inf
    log1mq = math.log1p(-q)
    logq = math.log(q)
    for i in range(alpha + 1):
        c = _log_comb(alpha, i) + i * logq + (alpha - i) * log1mq
        log_a = _log_add(log_a, c + (i * i - i) / (2 * sigma**2))
    return log_a


def _log_a_frac(q: float, sigma: float, alpha: float) -> float:
    a0 = a1 = -math.inf
    z0 = sigma**2 * math.log(1 / q - 1) + 0.5
    log1mq = math.log1p(-q)
    logq = math.log(q)
    last0 = last1 = -math.inf
    for i in range(_MAX_FRAC_TERMS):
        coef = _log_comb(alpha, i)
        j = alpha - i
        t0 = coef + i * logq + j * log1mq
        t1 = coef + j * logq + i * log1mq
        e0 = math.log(0.5) + _log_erfc((i - z0) / (math.sqrt(2) * sigma))
        e1 = math.log(0.5) + _log_erfc((z0 - j) / (math.sqrt(2) * sigma))
        s0 = t0 + (i * i - i) / (2 * sigma**2) + e0
        s1 = t1 + (j * j - j) / (2 * sigma**2) + e1
        a0 = _log_add(a0, s0)
        a1 = _log_add(a1, s1)
        total = _log_add(a0, a1)
        if s0 < last0 and s1 < last1 and max(s0, s1) < total - 30:
            return total
        last0, last1 = s0, s1
    return math.inf  # did not converge: the order is excluded (infinite RDP), as dp-accounting does


def rdp_poisson_subsampled_gaussian(q: float, sigma: float, orders: Sequence[float] = DEFAULT_ORDERS) -> list[float]:
    """RDP of one step at each order."""
    if not 0 <= q <= 1:
        raise ValueError(f"sample rate must be in [0, 1], got {q}")
    if not sigma >= 0:
        raise ValueError(f"noise multiplier must be >= 0, got {sigma}")
    out = []
    for a in orders:
        if q == 0:
            out.append(0.0)
        elif sigma == 0 or math.isinf(a):
            out.append(math.inf)
        elif q == 1:
            out.append(a / (2 * sigma**2))
        elif float(a).is_integer():
            out.append(_log_a_int(q, sigma, int(a)) / (a - 1))
        else:
            out.append(_log_a_frac(q, sigma, a) / (a - 1))
    return out


def epsilon_from_rdp(rdp: Sequence[float], delta: float, orders: Sequence[float] = DEFAULT_ORDERS) -> tuple[float, float]:
    """(epsilon, optimal order) for the given delta."""
    if delta < 0:
        raise ValueError("delta must be >= 0")
    if delta == 0:
        return (0.0, 0.0) if all(r == 0 for r in rdp) else (math.inf, 0.0)
    best, best_order = math.inf, orders[0]
    for a, r in zip(orders, rdp, strict=True):
        if r < 0:
            eps = 0.0
        elif delta**2 + math.expm1(-r) > 0:
            eps = 0.0
        elif a > 1.01:
            eps = r + math.log1p(-1 / a) - math.log(delta * a) / (a - 1)
        else:
            eps = math.inf
        if eps < best:
            best, best_order = eps, a
    return max(0.0, best), best_order


class RdpAccountant:
    """Composes (q, sigma, steps) spends; memoises per (q, sigma) so replay is cheap."""

    def __init__(self, orders: Sequence[float] = DEFAULT_ORDERS):
        self.orders = tuple(orders)
        self.rdp = [0.0] * len(self.orders)
        self._cache: dict[tuple[float, float], list[float]] = {}

    def compose(self, q: float, sigma: float, steps: int) -> None:
        if steps < 0:
            raise ValueError("steps must be >= 0")
        key = (q, sigma)
        one = self._cache.get(key)
        if one is None:
            one = self._cache[key] = rdp_poisson_subsampled_gaussian(q, sigma, self.orders)
        self.rdp = [r + steps * x for r, x in zip(self.rdp, one, strict=True)]

    def epsilon(self, delta: float) -> float:
        return epsilon_from_rdp(self.rdp, delta, self.orders)[0]


def replay(spends: Iterable[tuple[float, float, int]], delta: float) -> float:
    acc = RdpAccountant()
    for q, sigma, steps in spends:
        acc.compose(q, sigma, steps)
    return acc.epsilon(delta)
