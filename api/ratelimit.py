"""Per-principal token buckets (in-process: with N worker processes the effective rate is N x)."""

from __future__ import annotations

import threading
import time


class TokenBuckets:
    """`rate` requests per second sustained, bursts up to `burst`; keys are token ids or IPs."""

    def __init__(self, rate: float, burst: float, *, max_keys: int = 100_000):
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._state: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, cost: float = 1.0, now: float | None = None) -> float:
        """Take `cost` tokens; return 0.0 if allowed, else seconds until it would be allowed."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._state.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= cost:
                self._state[key] = (tokens - cost, now)
                return 0.0
            self._state[key] = (tokens, now)
            if len(self._state) > self.max_keys:  # forget idle keys (a full bucket is the default)
                self._state = {k: v for k, v in self._state.items() if now - v[1] < self.burst / self.rate}
            return (cost - tokens) / self.rate
