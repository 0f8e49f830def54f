"""Fine-tuning throughput of E on simulated N-MNIST shapes (2x34x34 frames, T = 8): how many
processes and threads to give a multi-seed study on a small CPU.

    python benchmarks/finetune_throughput.py <threads> <batch size> <samples>
    (python benchmarks/finetune_throughput.py 1 32 4096 & python benchmarks/finetune_throughput.py 1 32 4096; wait)
"""

import sys
import time

import torch

from direct2event.snn.encoders import InputCoding
from direct2event.snn.finetuning import FinetuneConfig, finetune_event_network
from direct2event.snn.models import build_model, to_event_network
from direct2event.snn.training import FitConfig, Split

threads, bs, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
g = torch.Generator().manual_seed(0)
x = (torch.rand(n, 8, 2, 34, 34, generator=g) < 0.02).to(torch.uint8)
y = torch.randint(0, 10, (n,), generator=g)
d = build_model("convnet", (2, 34, 34), 10, hidden=128)
e = to_event_network(d)
cfg = FitConfig(
    epochs=1, lr=1e-3, batch_size=bs, coding=InputCoding("frames", 8), seed=0, progress=False
)
logits = torch.randn(n, 10)
t = time.perf_counter()
finetune_event_network(
    e,
    d,
    Split(x, y),
    FinetuneConfig(cfg, rate_lambda=3.0, distill=True, teacher=InputCoding("frames", 8)),
    torch.device("cpu"),
    logits=logits,
)
dt = time.perf_counter() - t
print(f"threads={threads} bs={bs} n={n}: {dt:.1f} s, {n / dt:.0f} samples/s")
