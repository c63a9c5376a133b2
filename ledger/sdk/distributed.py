"""Which process of a distributed job this is (docs/sdk.md, "Distributed training").

A run is recorded once: only the world process zero records run-level events. The rank is
read from ``torch.distributed`` when it is already imported and initialised (torch is never
imported for this), else from the launcher's environment: torchrun, accelerate, DeepSpeed and
FSDP jobs (all started by torchrun-style launchers) set ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``;
``mpirun`` (Open MPI), PMI and Slurm set their own.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

# (rank, world size, local rank) variables, in order of precedence
_LAUNCHER_ENV = (
    ("RANK", "WORLD_SIZE", "LOCAL_RANK", "torchrun"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "mpirun"),
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "pmi"),
    ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "slurm"),
)


@dataclass(frozen=True)
class RankInfo:
    rank: int
    world_size: int
    local_rank: int
    source: str  # "torch.distributed", a launcher name, "explicit" or "single"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def body(self) -> dict:
        return {"rank": self.rank, "world_size": self.world_size, "local_rank": self.local_rank}


def _int(v: str | None, default: int) -> int:
    try:
        return int(v) if v is not None and v.strip() != "" else default
    except ValueError:
        return default


def detect() -> RankInfo:
    td = sys.modules.get("torch.distributed")
    if td is not None:
        try:
            if td.is_available() and td.is_initialized():
                return RankInfo(td.get_rank(), td.get_world_size(), _int(os.environ.get("LOCAL_RANK"), 0), "torch.distributed")
        except Exception:  # a half-initialised backend: fall back to the environment
            pass
    env = os.environ
    for rank_var, size_var, local_var, source in _LAUNCHER_ENV:
        if rank_var in env:
            rank = _int(env.get(rank_var), 0)
            return RankInfo(rank, max(1, _int(env.get(size_var), 1)), _int(env.get(local_var), 0), source)
    return RankInfo(0, 1, 0, "single")
