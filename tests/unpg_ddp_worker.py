"""Two-process UNPG check (run by tests/test_unpg.py): `python tests/unpg_ddp_worker.py OUT_DIR`.

Spawns 2 gloo processes; each wraps a tiny encoder + normalised classifier in DDP, takes its shard of a
seeded global batch, computes UNPGLoss (negatives from the gathered global batch), runs backward, and
rank 0 saves the mean loss over ranks and the DDP-averaged gradients; the parent then saves the reference
computed in one process on the whole global batch. Shards: equal (6 + 6) and unequal (5 + 7).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from rankface.losses.margins import ArcFace, MagFace, NormalizedClassifier
from rankface.losses.unpg import UNPGLoss

N, D_IN, E, C = 12, 10, 6, 4


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(D_IN, E)
        self.classifier = NormalizedClassifier(E, C)

    def forward(self, x):
        emb = self.encoder(x) * 5.0  # norms around 10-20 so MagFace's margin varies
        return emb, self.classifier(emb)


def make(seed: int = 0):
    torch.manual_seed(seed)
    model = Tiny()
    x = torch.randn(N, D_IN)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 0, 1, 2])
    return model, x, y


def reference(head_name: str) -> dict:
    model, x, y = make()
    loss_fn = UNPGLoss(ArcFace() if head_name == "arcface" else MagFace(), wisk=1.5)
    emb, cos = model(x)
    loss = loss_fn(emb, y, cos)
    loss.backward()
    return {
        "loss": loss.detach(),
        "grads": {k: p.grad.clone() for k, p in model.named_parameters()},
        "m": loss_fn.last_num_negatives,
    }


def worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    assert dist.get_world_size() == 2, "the multi-process check must run 2 processes"
    results = {}
    for head_name in ("arcface", "magface"):
        for split in (6, 5):
            model, x, y = make()
            ddp = DistributedDataParallel(model)
            rows = slice(0, split) if rank == 0 else slice(split, N)
            loss_fn = UNPGLoss(ArcFace() if head_name == "arcface" else MagFace(), wisk=1.5)
            emb, cos = ddp(x[rows])
            loss = loss_fn(emb, y[rows], cos)
            loss.backward()  # DDP averages the gradients over the 2 ranks
            mean_loss = loss.detach().clone()
            dist.all_reduce(mean_loss)
            results[(head_name, split)] = {
                "loss": mean_loss / 2,
                "grads": {k: p.grad.clone() for k, p in model.named_parameters()},
                "m": loss_fn.last_num_negatives,
                "world": dist.get_world_size(),
            }
    # negative control: local negatives only must NOT reproduce the global-batch loss
    model, x, y = make()
    rows = slice(0, 6) if rank == 0 else slice(6, N)
    emb, cos = DistributedDataParallel(model)(x[rows])
    local = UNPGLoss(ArcFace(), wisk=1.5, gather=False)(emb, y[rows], cos).detach()
    dist.all_reduce(local)
    results[("arcface-local", 6)] = {"loss": local / 2}
    if rank == 0:
        torch.save(results, Path(out_dir) / "ddp_results.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    init = out / "dist_init"
    init.unlink(missing_ok=True)  # a stale rendezvous file from an earlier run would point at dead ports
    mp.spawn(worker, args=(str(init), str(out)), nprocs=2, join=True)
    # the single-process reference on the whole global batch, outside any process group
    torch.save({h: reference(h) for h in ("arcface", "magface")}, out / "reference.pt")
