"""Multi-process training: ``torchrun`` initialisation, DDP / FSDP2 wrapping, rank-0-only helpers.

One process per device. ``torchrun`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``
and ``MASTER_PORT``; :func:`init_distributed` reads them (a plain ``python`` launch is a world of
one and needs no process group). Multi-node runs use torchrun's own rendezvous flags
(``--nnodes``, ``--rdzv-backend``, ``--rdzv-endpoint``); see ``docs/distributed.md``.

Strategies:
  * ``ddp``: every process holds the whole model; gradients are averaged across processes.
  * ``fsdp``: FSDP2 (:func:`torch.distributed.fsdp.fully_shard`) shards every transformer block
    and the remaining root parameters across processes, so that each holds ``1 / world_size`` of
    the weights, gradients and optimiser state; for models too large for one device (ViT-g).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from vjepa2.config import ConfigError
from vjepa2.layers.block import Block


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: ``rank`` of ``world_size`` processes, on ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Only the main process prints, logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _pick_device(device: str, local_rank: int) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device: cuda was requested but no CUDA device is available; use device=cpu or auto")
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA devices are "
                               f"visible; start at most that many processes per node")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device: str = "auto", backend: str = "auto") -> DistEnv:
    """Set up this process from torchrun's environment variables (a world of one without them).

    Args:
        device: ``auto`` (CUDA if present), ``cuda`` or ``cpu``.
        backend: ``auto`` (NCCL on CUDA, gloo on CPU), ``nccl`` or ``gloo``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _pick_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if backend == "auto":
            backend = "nccl" if dev.type == "cuda" else "gloo"
        if backend == "nccl" and dev.type != "cuda":
            raise RuntimeError("distributed.backend: nccl needs CUDA devices; use gloo (or auto) on CPU")
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30),
                                device_id=dev if dev.type == "cuda" else None)
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def shutdown() -> None:
    """Tear the process group down (no-op in a world of one)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, strategy: str, env: DistEnv) -> nn.Module:
    """Prepare ``model`` for data-parallel training; a world of one with ``ddp`` is returned as is.

    ``fsdp`` shards each :class:`~vjepa2.layers.block.Block` as its own unit (gathered just before
    it runs, freed right after) and then the root.
    """
    if strategy == "ddp":
        if not env.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        if not env.distributed:
            raise RuntimeError("distributed.strategy: fsdp needs several processes (launch with torchrun); "
                               "use ddp for a single process")
        mesh = init_device_mesh(env.device.type, (env.world_size,))
        for module in model.modules():
            if isinstance(module, Block):
                fully_shard(module, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    raise ValueError(f"unknown distributed strategy {strategy!r}; expected ddp or fsdp")


def unwrap(model: nn.Module) -> nn.Module:
    """The user module inside a DDP wrapper (FSDP2 shards in place, so it is the module itself)."""
    return getattr(model, "module", model) if type(model).__name__ == "DistributedDataParallel" else model


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool):
    """Skip the cross-process gradient reduction inside the block when ``enabled`` is False
    (gradient-accumulation micro-steps before the last one)."""
    if enabled:
        yield
    elif hasattr(model, "no_sync"):  # DDP
        with model.no_sync():
            yield
    elif hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over all processes (the tensor itself in a world of one)."""
    if dist.is_initialized():
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_sum_autograd(tensor: torch.Tensor) -> torch.Tensor:
    """Like :func:`all_reduce_sum`, but differentiable: the gradient of the sum flows back to every
    process's part (for loss terms computed from statistics over the global batch)."""
    if not dist.is_initialized():
        return tensor
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(tensor, op=dist.ReduceOp.SUM)


def all_gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (picklable objects; ``[obj]`` in a world of one)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    """``obj`` of rank ``src`` on every process."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def full_state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Unsharded CPU ``(model, optimizer)`` state dicts with parameter-name keys (full on rank 0)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer, model_sd: dict, optim_sd: dict) -> None:
    """Load unsharded ``(model, optimizer)`` state dicts (as :func:`full_state_dicts` gives) into a
    wrapped or plain model, strictly; every process loads the same full dicts."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd,
                   options=StateDictOptions(full_state_dict=True, strict=True))
