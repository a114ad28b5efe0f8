"""QAT with learned binary points under DistributedDataParallel (gloo, CPU, 2 processes).

Each rank trains on different data; DDP averages the gradients, the binary
points (``*.int_bits_move`` parameters) included, so after training every rank
must hold the same weights and the same learned formats.

Notes on using qfx under DDP (what this test does):

* Per-channel quantizers built without a channel count hold lazy
  (uninitialized) parameters, which DDP refuses; run one forward pass (the
  calibration does) before wrapping, as for torch's lazy modules.
* Calibrate before wrapping: DDP's constructor broadcasts rank 0's parameters
  and buffers, so per-rank calibration results are replaced by rank 0's.
* BatchNorm running statistics are buffers: DDP broadcasts rank 0's at each
  forward, but the last training step leaves each rank's own update, so they
  are not compared here (use SyncBatchNorm-like syncing or broadcast before saving).
"""

from __future__ import annotations

import json
import os
import pathlib
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import qfx

WORLD = 2


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x) + x)
        return self.fc(torch.flatten(self.pool(x), 1))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(0)  # same float model everywhere...
        model = SmallCNN()
        config = qfx.QConfig(weight=6, activation=8, learn_int_bits=True, weight_granularity="channel")
        qmodel = qfx.quantize_model(model, config)
        g = torch.Generator().manual_seed(100 + rank)  # ...but different data per rank
        data = [(torch.randn(8, 1, 8, 8, generator=g) * (1 + rank), torch.randint(0, 3, (8,), generator=g))
                for _ in range(4)]
        # Calibration doubles as the dry forward that sizes lazy per-channel quantizers.
        qfx.calibrate(qmodel, [x for x, _ in data], max_passes=3)
        uninitialized = [n for n, p in qmodel.named_parameters()
                         if isinstance(p, nn.parameter.UninitializedParameter)]
        assert not uninitialized, uninitialized
        ddp = nn.parallel.DistributedDataParallel(qmodel)
        optimizer = torch.optim.Adam(ddp.parameters(), lr=0.05)
        for step in range(6):
            x, y = data[step % len(data)]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(ddp(x), y).backward()
            optimizer.step()
        module = ddp.module
        formats = {}
        for name, q in module.named_modules():
            if isinstance(q, (qfx.nn.FixedQuantizer, qfx.nn.KHotQuantizer)):
                t = q.fixed_type
                formats[name] = [str(f) for f in t] if isinstance(t, list) else str(t)
        params = {n: p.detach().double().flatten().tolist() for n, p in module.named_parameters()}
        learned = [n for n in params if n.endswith("int_bits_move")]
        grads = {n: p.grad is not None for n, p in module.named_parameters() if n.endswith("int_bits_move")}
        result = {"formats": formats, "params": params, "learned": learned, "grads": grads}
        path = pathlib.Path(out_dir) / f"rank{rank}.json"
        path.write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_ddp_qat_keeps_ranks_identical(tmp_path: pathlib.Path) -> None:
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    r0, r1 = results
    assert r0["learned"], "no learned binary points found"
    assert any(r0["grads"].values()), "binary points received no gradient"
    assert r0["formats"] == r1["formats"]
    assert r0["params"].keys() == r1["params"].keys()
    for name in r0["params"]:
        assert r0["params"][name] == r1["params"][name], name
