#!/usr/bin/python3
"""Benchmarks of the Python package (docs/benchmarks.md, "Python client and DFA for PyTorch").

1. The client's own overhead per call against the C++ client's: the same opu-serve, the same
   requests, Python (``opu_toolkit``) and C++ (``opu-device-call``, RemoteDevice) in alternating
   rounds; median wall time per call.
2. A DFA training step of the paper's MLP (784-256-256-10, batch 128) in PyTorch with digital
   feedback against the same step with feedback served by that opu-serve, and the time of the
   feedback call inside it.

    cd python && python3 bench/bench_client.py [--calls 200] [--steps 100] [--rounds 3]

Prints a table and one JSON object as its last line. Needs build/dev (opu-serve, opu-device-call).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from opu_toolkit import DFA, DFALayer, open_device, recommended_linear_options  # noqa: E402
from opu_toolkit.client import ServeProcess  # noqa: E402

REPO = ROOT.parent
DEVICE_CALL = os.environ.get("OPU_DEVICE_CALL", str(REPO / "build/dev/tests/offload/opu-device-call"))


def python_calls(device, case, calls):
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        if case["call"] == "transform":
            device.transform(case["frames"], n_out=case["n_out"])
        else:
            device.linear_transform(case["values"], n_out=case["n_out"], options=case["options"])
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def cpp_calls(address, case, calls, tmp):
    src = Path(tmp) / "in.bin"
    if case["call"] == "transform":
        src.write_bytes(np.packbits(case["frames"], axis=1, bitorder="little").tobytes())
        extra = []
        n_in, batch = case["frames"].shape[1], case["frames"].shape[0]
    else:
        src.write_bytes(case["values"].astype("<f4").tobytes())
        o = case["options"]
        extra = [f"encoding={o.encoding}", f"bitplanes={o.bitplanes}",
                 f"share_frames={int(o.share_frames)}", f"repeats={o.repeats}",
                 f"reference_repeats={o.reference_repeats}"]
        batch, n_in = case["values"].shape
    out = subprocess.run([DEVICE_CALL, f"grpc://{address}", case["call"], f"n_in={n_in}",
                          f"n_out={case['n_out']}", f"batch={batch}", f"in={src}",
                          f"calls={calls}", *extra], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["median_call_us"]


class MLP(nn.Module):
    def __init__(self, device=None):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 256), nn.Linear(256, 256), nn.Linear(256, 10)
        self.dfa1, self.dfa2 = DFALayer(), DFALayer()
        self.dfa = DFA([self.dfa1, self.dfa2], device=device)

    def forward(self, x):
        x = self.dfa1(torch.relu(self.fc1(x)))
        x = self.dfa2(torch.relu(self.fc2(x)))
        return self.dfa(self.fc3(x))


def dfa_steps(device, steps, seed=1):
    torch.manual_seed(seed)
    model = MLP(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(128, 784, generator=g), torch.randint(0, 10, (128,), generator=g)
    project = model.dfa.project
    feedback = []

    def timed(errors):
        t = time.perf_counter()
        out = project(errors)
        feedback.append(time.perf_counter() - t)
        return out

    model.dfa.project = timed
    times = []
    for step in range(steps + 5):
        t = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if step >= 5:  # warm-up: allocations, the first connection
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3, statistics.median(feedback[5:]) * 1e3


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("OPU_SERVE", str(REPO / "build/dev/offload/opu-serve"))
    server = ServeProcess(["--camera", "realistic", "--n-in", "1024", "--n-out", "256",
                           "--threads", "1", "--log-level", "warn", "--summary-interval-s", "0"])
    rng = np.random.default_rng(1)
    cases = {
        "Transform, 1 frame": dict(call="transform", frames=rng.random((1, 1024)) < 0.5,
                                   n_out=256),
        "Transform, 256 frames": dict(call="transform", frames=rng.random((256, 1024)) < 0.5,
                                      n_out=256),
        "LinearTransform, DFA feedback 128x10 -> 256": dict(
            call="linear", values=(rng.standard_normal((128, 10)) * 0.01).astype(np.float32),
            n_out=256, options=recommended_linear_options()),
    }
    results = {name: {"python_us": [], "cpp_us": []} for name in cases}
    try:
        device = open_device(f"grpc://{server.address}")
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(a.rounds):
                for name, case in cases.items():
                    calls = a.calls if case["call"] == "transform" else max(10, a.calls // 10)
                    results[name]["python_us"].append(python_calls(device, case, calls))
                    results[name]["cpp_us"].append(cpp_calls(server.address, case, calls, tmp))
        steps = {"digital": [], "served": [], "served_feedback": []}
        for _ in range(a.rounds):
            steps["digital"].append(dfa_steps(None, a.steps)[0])
            step, fb = dfa_steps(device, a.steps)
            steps["served"].append(step)
            steps["served_feedback"].append(fb)
        device.close()
    finally:
        server.stop()
    summary = {"calls": {}, "dfa_step_ms": {}}
    print(f"{'call':48s} {'python us':>10s} {'C++ us':>10s} {'ratio':>6s}")
    for name, r in results.items():
        py, cpp = statistics.median(r["python_us"]), statistics.median(r["cpp_us"])
        summary["calls"][name] = {"python_us": py, "cpp_us": cpp, "rounds": r}
        print(f"{name:48s} {py:10.0f} {cpp:10.0f} {py / cpp:6.2f}")
    for k, v in steps.items():
        summary["dfa_step_ms"][k] = statistics.median(v)
    s = summary["dfa_step_ms"]
    print(f"DFA step (784-256-256-10, batch 128): digital {s['digital']:.1f} ms, served "
          f"{s['served']:.1f} ms (x{s['served'] / s['digital']:.2f}), of which the feedback call "
          f"{s['served_feedback']:.1f} ms")
    summary["load_average"] = os.getloadavg()
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
