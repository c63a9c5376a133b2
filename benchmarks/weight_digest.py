"""Weight digest throughput (GB/s) beside plain hashlib SHA-256 over the same bytes.

    .venv/bin/python benchmarks/weight_digest.py [--gib 1.0] [--repeat 3]

Builds a state_dict of >= 1 GiB (float32 and bfloat16 tensors of mixed sizes, like a small
transformer), then times: (a) hashlib.sha256 over every tensor's bytes in one stream, single
thread (the baseline), (b) weights_digest(threads=1), (c) weights_digest() with the default pool.
Target: (b) >= 80% of (a). Prints the best of --repeat runs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from rlhf_ledger.sdk.weights import tensor_bytes, weights_digest


def build(gib: float) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    sd: dict[str, torch.Tensor] = {}
    total, i = 0, 0
    target = int(gib * 2**30)
    while total < target:
        # a layer: a big bf16 matrix, a float32 matrix, small norms and biases
        for name, shape, dt in ((f"layers.{i}.mlp.weight", (4096, 8192), torch.bfloat16),
                                (f"layers.{i}.attn.weight", (2048, 4096), torch.float32),
                                (f"layers.{i}.norm.weight", (4096,), torch.float32),
                                (f"layers.{i}.attn.bias", (4096,), torch.bfloat16)):
            t = torch.empty(shape, dtype=dt).uniform_(-1, 1)
            sd[name] = t
            total += t.numel() * t.element_size()
        i += 1
    return sd


def plain_hashlib(sd: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for n in sorted(sd):
        h.update(tensor_bytes(sd[n]))
    return h.hexdigest()


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    sd = build(a.gib)
    nbytes = sum(t.numel() * t.element_size() for t in sd.values())
    gb = nbytes / 1e9
    print(f"state_dict: {len(sd)} tensors, {nbytes / 2**30:.2f} GiB ({gb:.2f} GB); cpus={os.cpu_count()}")
    runs = {"base": [], "one": [], "pool": []}
    fns = {"base": lambda: plain_hashlib(sd), "one": lambda: weights_digest(sd, threads=1), "pool": lambda: weights_digest(sd)}
    for _ in range(a.repeat):  # interleaved rounds, so cache warm-up favours no contender
        for k, fn in fns.items():
            runs[k].append(best(fn, 1))
    base, one, pool = min(runs["base"]), min(runs["one"]), min(runs["pool"])
    print(f"{'plain hashlib sha256 (1 stream)':40s} {gb / base:6.2f} GB/s  (baseline)")
    print(f"{'weights_digest threads=1':40s} {gb / one:6.2f} GB/s  {100 * base / one:5.1f}% of baseline")
    print(f"{'weights_digest default pool':40s} {gb / pool:6.2f} GB/s  {100 * base / pool:5.1f}% of baseline")
    print(f"target: threads=1 >= 80% of baseline -> {'MET' if base / one >= 0.8 else 'NOT MET'}")


if __name__ == "__main__":
    main()
