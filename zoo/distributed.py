"""Several training processes as one run, with PyTorch's own torch.distributed.

`torchrun` (or `zoo train --nproc N`, which calls torchrun's launcher) starts the processes and
sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous; `Ranks.from_environment()` joins the
process group (NCCL on GPUs, gloo on CPUs). One process is `Ranks()`, whose collectives are
no-ops, so the loop has a single code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from zoo.errors import ZooError, first_line


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job: rank 0 of 1 unless launched by torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # gloo | nccl once a process group runs

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run folder, checkpoints and figures."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_environment(cls, device_type: str) -> Ranks:
        """Join the process group torchrun describes in the environment; one process without it."""
        if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
            return cls()
        import torch.distributed as dist

        backend = "nccl" if device_type == "cuda" else "gloo"
        if not dist.is_initialized():
            try:
                dist.init_process_group(backend)
            except (RuntimeError, ValueError) as error:
                raise ZooError(
                    f"Could not join the torchrun job ({first_line(error)}); check "
                    "--rdzv-endpoint, --nnodes and that every node can reach the endpoint."
                ) from None
        return cls(
            dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), backend
        )

    def sum(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every tensor summed over the processes (CPU tensors in and out)."""
        if not self.distributed:
            return tensors
        import torch.distributed as dist

        device = torch.device("cuda", self.local_rank) if self.backend == "nccl" else None
        summed = {}
        for key, tensor in tensors.items():
            buffer = tensor.clone() if device is None else tensor.to(device)
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            summed[key] = buffer.cpu()
        return summed

    def any(self, flag: bool) -> bool:
        """True on every process when it is true on at least one."""
        if not self.distributed:
            return flag
        return bool(self.sum({"flag": torch.tensor(float(flag))})["flag"].item() > 0)

    def min(self, value: float) -> float:
        if not self.distributed:
            return value
        import torch.distributed as dist

        device = torch.device("cuda", self.local_rank) if self.backend == "nccl" else None
        buffer = torch.tensor(float(value), dtype=torch.float64, device=device)
        dist.all_reduce(buffer, op=dist.ReduceOp.MIN)
        return buffer.item()

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def shutdown(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


ONE_PROCESS = Ranks()  # the default: rank 0 of 1, every collective a no-op


def launch(nproc: int, argv: list[str]) -> int:
    """Run `zoo <argv>` in `nproc` processes on this machine with torchrun's own launcher
    (torch.distributed.run, `--standalone`: a local rendezvous on a free port); returns the exit
    status for the shell (the first failed process's, else 0)."""
    if "RANK" in os.environ:
        raise ZooError("--nproc starts its own processes; under torchrun, leave it out.")
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # torchrun would set 1 thread per process (with a warning); share the cores out instead.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    args = parse_args(["--standalone", f"--nproc-per-node={nproc}", "--module", "zoo", *argv])
    try:
        run(args)
    except ChildFailedError as error:
        return next(iter(error.failures.values())).exitcode or 1
    except SignalException as error:  # Ctrl-C: torchrun passed it on, the workers stopped
        return 128 + int(error.sigval)
    return 0
