"""`eyas distill` on several processes (torchrun): which share of the work is this rank's, and the few collectives
the run needs. Without torchrun's WORLD_SIZE / RANK / LOCAL_RANK there is one process, `World()`, and every
method here returns at once without touching torch.distributed: the single-process run is unchanged.

    torchrun --nproc_per_node N [--nnodes M --rdzv_backend c10d --rdzv_endpoint HOST:PORT] -m eyas.distill ...

The rules (docs/scaling.md):

* **work**: a block of teachers x episodes is split by teachers when there are at least as many teachers as ranks
  (RAPTOR: 1000 teachers), else by episodes, each rank flying every teacher (`World.part`); evaluations are split
  by rows (`World.rows`) and their statistics gathered, so every rank holds the same figures;
* **data**: each rank keeps the episodes it flew; a gradient step takes ``batch_size / N`` rows from every rank's
  own data and averages the gradients over ranks (`average_gradients`): rl-tools' MSE is a mean over all
  S x B x A elements and every rank holds S x B/N x A of them, so the mean of the ranks' gradients is the gradient
  of one batch of B rows made of the ranks' rows, and rl-tools' Adam, which then sees the same gradient on every
  rank, keeps the ranks' parameters identical (broadcast from rank 0 once at the start);
* **randomness**: one generator per rank, seeded with ``--seed`` on rank 0 and a seed derived from (seed, rank)
  elsewhere (`rank_seed`), used for that rank's environment draws and for shuffling its own data; nothing random
  is shared, so no stream has to stay in step: what the ranks must agree on (parameters, the number of batches,
  the best actor, APG's acceptance) is settled by a collective, never by drawing the same numbers;
* **files**: rank 0 alone reads and writes the run directory; the rank-local state (generator, an aggregating
  run's episodes) is gathered into rank 0's state.pt and scattered back by ``--resume`` (same world size);
* **failure**: every collective has a timeout (``EYAS_DIST_TIMEOUT_S``, default 600 s); one that fails because
  another rank stopped or did not answer raises `PeerError` (one line, `eyas distill` exits 1).
"""
from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.distributed as dist

from eyas.distill.dataset import DistillationError
from eyas.errors import EyasError
from eyas.teachers import Block

TIMEOUT_ENV, DEFAULT_TIMEOUT_S = "EYAS_DIST_TIMEOUT_S", 600.0


class PeerError(EyasError, RuntimeError):
    """A collective failed: another rank stopped (crashed, killed) or did not answer within the timeout."""

    exit_status = 1


class SaidByMain(DistillationError):
    """Rank 0's `DistillationError`, raised on the other ranks by `World.from_main` (rank 0 reports it)."""

    reported_elsewhere = True


def timeout_s() -> float:
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        value = -1.0
    if not value > 0:
        raise DistillationError(f"{TIMEOUT_ENV}={text!r}: expected a number of seconds > 0")
    return value


def split(total: int, parts: int, index: int) -> tuple[int, int]:
    """[start, stop) of part ``index`` when ``total`` items are cut into ``parts`` contiguous parts whose sizes
    differ by at most one (the first ``total % parts`` parts are one larger)."""
    size, extra = divmod(int(total), int(parts))
    start = index * size + min(index, extra)
    return start, start + size + (index < extra)


def _collective(fn):
    """Turn torch.distributed's failures (a peer closed its connection, a timeout) into one-line `PeerError`s."""
    @functools.wraps(fn)
    def wrapped(self, *args, **kwargs):
        if self.size == 1:
            return fn(self, *args, **kwargs)
        try:
            return fn(self, *args, **kwargs)
        except RuntimeError as e:  # DistBackendError, DistNetworkError and gloo's errors are RuntimeErrors
            detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise PeerError(f"lost contact with the other ranks in {fn.__name__} (a rank stopped, or one did not "
                            f"answer within {timeout_s():g} s, {TIMEOUT_ENV}): {detail}") from e
    return wrapped


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a run (``size`` 1: the only process)."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "World":
        """From torchrun's environment variables (none: one process)."""
        names = ("WORLD_SIZE", "RANK", "LOCAL_RANK")
        try:
            size, rank, local = (int(os.environ.get(n, d)) for n, d in zip(names, ("1", "0", "0")))
        except ValueError:
            raise DistillationError("WORLD_SIZE / RANK / LOCAL_RANK must be integers, got "
                                    + ", ".join(f"{n}={os.environ.get(n)!r}" for n in names)) from None
        if size < 1 or not 0 <= rank < size or local < 0:
            raise DistillationError(f"WORLD_SIZE={size} RANK={rank} LOCAL_RANK={local}: need 0 <= RANK < "
                                    f"WORLD_SIZE and LOCAL_RANK >= 0")
        return cls(size, rank, local)

    @classmethod
    def current(cls) -> "World":
        """The initialised process group's world (`launched`), else one process."""
        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        return cls(dist.get_world_size(), dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")))

    # ------------------------------------------------------------------ this rank's share
    def device(self, device: torch.device) -> torch.device:
        """The run's device for this rank: CUDA runs use ``cuda:LOCAL_RANK``."""
        if not self.distributed or device.type != "cuda":
            return device
        if device.index is not None and device.index != self.local_rank:
            raise DistillationError(f"--device {device} under torchrun: rank {self.rank} uses cuda:{self.local_rank} "
                                    f"(LOCAL_RANK); pass --device cuda")
        return torch.device("cuda", self.local_rank)

    def rank_seed(self, seed: int) -> int:
        """The seed of this rank's generator: ``seed`` itself on rank 0, an independent one elsewhere."""
        if self.rank == 0:
            return int(seed)
        words = np.random.SeedSequence([int(seed) % 2**63, self.rank]).generate_state(2, np.uint32)
        return (int(words[0]) << 31) ^ int(words[1])

    def part(self, block: Block) -> Block:
        """This rank's rows of ``block`` (teachers ``block.first`` .. + ``count``, ``per_teacher`` episodes each):
        a contiguous share of the teachers when there are at least as many as ranks, else every teacher with a
        share of its episodes."""
        if not self.distributed:
            return block
        if block.count >= self.size:
            a, b = split(block.count, self.size, self.rank)
            return Block(block.first + a, b - a, block.per_teacher)
        if block.per_teacher < self.size:
            raise DistillationError(f"{self.size} ranks, but {block.count} teacher(s) x {block.per_teacher} episodes "
                                    f"leave some rank without an episode: raise the episodes (--num_episodes, "
                                    f"--offset_episodes, --apg_envs) to at least {self.size}, or use fewer ranks")
        a, b = split(block.per_teacher, self.size, self.rank)
        return Block(block.first, block.count, b - a)

    def parts(self, block: Block) -> list[Block]:
        """Every rank's `part` of ``block``, in rank order."""
        return [World(self.size, r, self.local_rank).part(block) for r in range(self.size)]

    def rows(self, total: int, what: str = "evaluation episodes") -> tuple[int, int]:
        """[start, stop) of this rank's share of ``total`` rows (every rank gets at least one)."""
        if total < self.size:
            raise DistillationError(f"{total} {what} cannot be split over {self.size} ranks: raise them to at least "
                                    f"{self.size}")
        return split(total, self.size, self.rank)

    # ------------------------------------------------------------------ collectives (no-ops for one process)
    @_collective
    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank."""
        if self.distributed:
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)

    @_collective
    def average_gradients(self, parameters: Iterable[torch.nn.Parameter], mean: bool = True) -> None:
        """All-reduce the gradients of ``parameters`` (one flat buffer): their mean over ranks, or their sum."""
        if not self.distributed:
            return
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        if mean:
            flat /= self.size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    @_collective
    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` summed over ranks (a new tensor; ``value`` itself for one process)."""
        if not self.distributed:
            return value
        out = value.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        return self.sum(value) / self.size if self.distributed else value

    @_collective
    def min(self, value: int) -> int:
        if not self.distributed:
            return int(value)
        out = torch.tensor([int(value)], dtype=torch.long)
        dist.all_reduce(out, op=dist.ReduceOp.MIN)
        return int(out)

    @_collective
    def all_gather(self, obj: Any) -> list:
        """Every rank's ``obj`` (picklable, small), in rank order."""
        if not self.distributed:
            return [obj]
        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    @_collective
    def gather(self, obj: Any) -> list | None:
        """Every rank's ``obj`` on rank 0 (in rank order); None on the other ranks."""
        if not self.distributed:
            return [obj]
        out = [None] * self.size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    @_collective
    def scatter(self, objs: list | None) -> Any:
        """Rank 0's ``objs[r]`` on rank r (``objs`` is read on rank 0 only)."""
        if not self.distributed:
            return objs[0]
        out = [None]
        dist.scatter_object_list(out, objs if self.is_main else None, src=0)
        return out[0]

    def from_main(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` run on rank 0 (the rank that owns the run directory), its result on every rank; a
        `DistillationError` it raises is raised on every rank."""
        if not self.distributed:
            return fn()
        box = [None]
        if self.is_main:
            try:
                box = [(True, fn())]
            except DistillationError as e:
                box = [(False, str(e))]
        ok, value = self.broadcast(box)[0]
        if not ok:
            raise DistillationError(value) if self.is_main else SaidByMain(value)
        return value

    @_collective
    def broadcast(self, objs: list) -> list:
        """Rank 0's list of objects on every rank (``objs`` gives the length elsewhere)."""
        if self.distributed:
            dist.broadcast_object_list(objs, src=0)
        return objs


@contextlib.contextmanager
def launched() -> Iterator[World]:
    """The process group of a torchrun launch, for the duration of the block (one process: nothing to do).
    Backend: gloo, plus NCCL for CUDA tensors where CUDA is available (``cpu:gloo,cuda:nccl``: object exchanges
    stay on the CPU); the device is ``cuda:LOCAL_RANK``."""
    world = World.from_env()
    if not world.distributed:
        yield world
        return
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(world.local_rank % torch.cuda.device_count())
    try:
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", rank=world.rank, world_size=world.size,
                                timeout=timedelta(seconds=timeout_s()))
    except (RuntimeError, ValueError) as e:
        raise PeerError(f"cannot join the other {world.size - 1} rank(s) (MASTER_ADDR={os.environ.get('MASTER_ADDR')}"
                        f" MASTER_PORT={os.environ.get('MASTER_PORT')}): "
                        f"{(str(e).strip().splitlines() or [''])[0][:300]}") from e
    try:
        yield World.current()
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
