"""One extraction split over torchrun's processes: `torchrun --nproc_per_node=N -m probebench extract ...`.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK in each process. Ranks split a cache entry's missing shards
(rank r takes every world-th one), write them with their own sidecar notes, and meet at a barrier; rank 0
then lists them in the manifest. Only barriers cross processes, so the gloo backend serves CPU and GPU runs
alike and no tensor is ever communicated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

# A rank that finishes early waits at the barrier for the slowest; a large dataset on uneven nodes can take
# hours longer on one rank than another, far past gloo's 30-minute default.
BARRIER_TIMEOUT = timedelta(hours=48)


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mine(self, items: list) -> list:
        """This rank's share of `items`: every world-th one, starting at its rank."""
        return items[self.rank :: self.world]


def ranks() -> Ranks:
    """This process's place among torchrun's processes (rank 0 of 1 when started alone)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    return Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def init() -> Ranks:
    """Join torchrun's process group (once); a lone process needs none."""
    import torch.distributed as dist

    r = ranks()
    if r.world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    return r


def barrier() -> None:
    """Wait for every rank. A rank that died breaks the group: one line here, and torchrun stops the rest."""
    import torch.distributed as dist

    from probebench.errors import UserError

    if not dist.is_initialized():
        return
    try:
        dist.barrier()
    except RuntimeError as exc:  # gloo: "Connection closed by peer" and the like (DistBackendError is one)
        raise UserError(
            f"rank {dist.get_rank()}: another rank of this extraction stopped ({str(exc).splitlines()[0]}); "
            "the shards finished are kept: re-run to resume"
        ) from None


def finish() -> None:
    """Leave the process group (after the last barrier)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def without_flag(argv: list[str], flag: str) -> list[str]:
    """`argv` without `flag` and its value (`--nproc 2` or `--nproc=2`)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        elif not arg.startswith(f"{flag}="):
            out.append(arg)
    return out


def launch_torchrun(nproc: int, argv: list[str]) -> None:
    """Start `probebench <argv>` in `nproc` processes through torchrun (its standalone rendezvous on this
    node), each with its share of the cores as torch threads, and wait for them."""
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    from probebench.errors import UserError

    if "OMP_NUM_THREADS" not in os.environ:  # torchrun's own default is 1 per process, with a warning
        os.environ["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // nproc))
    logging.getLogger("torch.distributed").setLevel(logging.CRITICAL)  # a rank says why it stopped
    args = get_args_parser().parse_args(
        ["--standalone", f"--nproc_per_node={nproc}", "-m", "probebench", *argv]
    )
    try:
        run(args)
    except SignalException:  # Ctrl-C or a kill reaches torchrun as a signal: the CLI's "interrupted" line
        raise KeyboardInterrupt from None
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()  # the root cause: torchrun then stops the other ranks
        code = failure.exitcode
        how = (
            f"was killed by signal {-code}"
            if code < 0
            else f"stopped with exit code {code} (its error is above)"
        )
        raise UserError(
            f"extraction rank {rank} of {nproc} {how}; the shards every rank finished are kept: "
            "re-run to resume"
        ) from None
