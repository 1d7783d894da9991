#!/usr/bin/python3
"""The paper's Fashion-MNIST example in PyTorch, with DFA feedback through a simulated OPU.

TinyDFA's MNIST example (784-256-256-10 ReLU, SGD lr 0.01 momentum 0.9, batch 128, 15 epochs), on
Fashion-MNIST (Debian's dataset-fashion-mnist) standardised with the training images' own mean
and std as opu-train does (docs/results.md: why not MNIST's constants). It trains

- ``dfa-opu``: DFA with B e from a device (default: ``sim://?camera=realistic&n_out=256``, which
  starts a local ``opu-serve`` with a realistic 8-bit camera and reaches it over gRPC), and
- ``dfa-digital``: the same script's TinyDFA-style digital DFA (``torch.mm`` with U[-1, 1) B),

from the same initial weights and data order, and prints both test accuracies per epoch and one
JSON object as its last line. The only difference between the two models is one argument:
``DFA([...], device=URI)``.

    cd python && python3 examples/fashion_mnist.py                # 15 epochs, both methods
    python3 examples/fashion_mnist.py --epochs 2 --methods dfa-opu --device grpc://127.0.0.1:50051
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import struct
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere in the tree
from opu_toolkit import DFA, DFALayer  # noqa: E402

DATA = Path(os.environ.get("FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    dims = raw[3]
    shape = struct.unpack(f">{dims}I", raw[4:4 + 4 * dims])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(folder: Path):
    def find(name):
        for candidate in (folder / f"{name}.gz", folder / name):
            if candidate.exists():
                return candidate
        raise SystemExit(f"fashion_mnist.py: {name}(.gz) not found in {folder} (apt-get install "
                         "dataset-fashion-mnist, or set FASHION_MNIST to an IDX folder)")

    x_train = read_idx(find("train-images-idx3-ubyte")).reshape(-1, 784) / np.float32(255)
    y_train = read_idx(find("train-labels-idx1-ubyte")).astype(np.int64)
    x_test = read_idx(find("t10k-images-idx3-ubyte")).reshape(-1, 784) / np.float32(255)
    y_test = read_idx(find("t10k-labels-idx1-ubyte")).astype(np.int64)
    mean, std = x_train.mean(), x_train.std()  # the training split's own (0.2860, 0.3530)
    return [torch.from_numpy(((x - mean) / std).astype(np.float32)) for x in (x_train, x_test)] + \
        [torch.from_numpy(y_train), torch.from_numpy(y_test)]


class MLP(nn.Module):
    """TinyDFA's MNISTFullyConnected: DFALayers after each hidden activation, DFA on the output."""

    def __init__(self, hidden=256, device=None):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, hidden), nn.Linear(hidden, hidden), \
            nn.Linear(hidden, 10)
        self.dfa1, self.dfa2 = DFALayer(), DFALayer()
        self.dfa = DFA([self.dfa1, self.dfa2], device=device)  # the one line that picks the OPU

    def forward(self, x):
        x = self.dfa1(torch.relu(self.fc1(x)))
        x = self.dfa2(torch.relu(self.fc2(x)))
        return self.dfa(self.fc3(x))


def evaluate(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum())
                      for i in range(0, len(x), 1000))
    model.train()
    return correct / len(x)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", default="sim://?camera=realistic&n_out=256",
                   help="feedback device URI for dfa-opu (sim://, grpc://, grpcs://)")
    p.add_argument("--methods", default="dfa-opu,dfa-digital",
                   help="comma-separated: dfa-opu, dfa-digital")
    p.add_argument("--threads", type=int, default=1, help="torch compute threads")
    p.add_argument("--train-samples", type=int, default=0,
                   help="use only the first N training images (0 = all 60000; smoke tests)")
    a = p.parse_args()
    methods = [m for m in a.methods.split(",") if m]
    for m in methods:
        if m not in ("dfa-opu", "dfa-digital"):
            p.error(f"--methods: '{m}' unknown; expected dfa-opu or dfa-digital")
    if a.epochs < 1 or a.batch < 1:
        p.error("--epochs and --batch: expected integers >= 1")
    torch.set_num_threads(a.threads)
    x_train, x_test, y_train, y_test = load(DATA)
    if a.train_samples:
        x_train, y_train = x_train[:a.train_samples], y_train[:a.train_samples]

    torch.manual_seed(a.seed)
    initial = MLP().state_dict()
    order = torch.Generator().manual_seed(a.seed)
    orders = [torch.randperm(len(x_train), generator=order) for _ in range(a.epochs)]
    summary = {"epochs": a.epochs, "seed": a.seed, "device": a.device}
    for method in methods:
        torch.manual_seed(a.seed + 1000)  # the digital B's draw
        model = MLP(device=a.device if method == "dfa-opu" else None)
        model.load_state_dict(initial)
        opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum)
        start = time.perf_counter()
        try:
            for epoch in range(a.epochs):
                perm = orders[epoch]
                total = 0.0
                for i in range(0, len(perm), a.batch):
                    idx = perm[i:i + a.batch]
                    opt.zero_grad()
                    loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
                    loss.backward()
                    opt.step()
                    total += float(loss) * len(idx)
                acc = evaluate(model, x_test, y_test)
                print(f"{method} epoch {epoch + 1}: loss {total / len(perm):.4f}, test accuracy "
                      f"{100 * acc:.2f}%, {time.perf_counter() - start:.0f} s, frames "
                      f"{model.dfa.frames}", flush=True)
        finally:
            model.dfa.close()
        summary[method] = {"test_accuracy": acc, "final_loss": total / len(perm),
                           "wall_s": time.perf_counter() - start, "frames": model.dfa.frames,
                           "device_time_s": model.dfa.device_time_s}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
