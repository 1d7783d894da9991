"""A real device written in Python trains with opu-train: the numpy FakeOpu (frames only) behind
the adapter, and opu-train's DFA feedback through the C++ client's holographic fallback."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

import opu_toolkit as opu
from opu_toolkit.fake import FakeOpu
from opu_toolkit.server import serve


def write_idx(folder: Path, seed: int = 5, n_train: int = 2000, n_test: int = 500) -> None:
    """A learnable 10-class image set in IDX format: each class a fixed random 28x28 pattern,
    each sample its pattern plus noise (opu-train reads any IDX folder of this layout)."""
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, (10, 28, 28)).astype(np.float64)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = prototypes[labels] * 0.5 + rng.integers(0, 128, (n, 28, 28))
        images = np.clip(images, 0, 255).astype(np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 0x801, n) + labels.tobytes())


def run_train(opu_train: str, data: Path, *args: str) -> dict:
    cmd = [opu_train, "--data", str(data), "--epochs", "2", "--hidden", "32", "32", "--batch", "64",
           "--threads", "1", "--align-every", "0", "--seed", "1", "--log-level", "warn", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_opu_train_trains_dfa_against_a_frames_only_python_device(opu_train, tmp_path):
    write_idx(tmp_path)
    # 180 mirrors: 10 features + 8 reference blocks of 10 mirrors each; 64 pixels >= d_max 32.
    device = FakeOpu(n_in=180, n_out=64, seed=1)
    server = serve(device)
    try:
        result = run_train(opu_train, tmp_path, "--method", "dfa", "--feedback",
                           f"grpc://{server.address}", "--reference-repeats", "16")
        stats = server.stats()
    finally:
        server.stop(grace_s=0)
    digital = run_train(opu_train, tmp_path, "--method", "dfa")
    shallow = run_train(opu_train, tmp_path, "--method", "shallow")
    # A frames-only device: the C++ client saw supports_linear = false in GetInfo and took every
    # projection from Transform frames (holography on its side); no LinearTransform was sent.
    assert stats.errors == {}
    assert stats.frames == result["frames"] == device.frames_taken > 0
    assert result["device_time_s"] > 0
    # Chance is 10%. Measured on this machine (seed 1): DFA through the fake device 1.000,
    # digital DFA 1.000, shallow (top layer only, on the random hidden features) 0.252 after 2
    # epochs. The thresholds leave room for OpenBLAS's run-time kernel choice on other CPUs,
    # while shallow's 0.25 shows the hidden layers had to learn from the device's feedback.
    assert result["test_accuracy"] > 0.9, result
    assert abs(result["test_accuracy"] - digital["test_accuracy"]) < 0.05, (result, digital)
    assert shallow["test_accuracy"] < 0.6, shallow


def test_python_client_reads_the_fake_device_as_the_cpp_client_does(tmp_path):
    """The adapter's frames for a request are the device's own counts, byte for byte."""
    device = FakeOpu(n_in=100, n_out=30, seed=2, noise_seed=9)
    reference = FakeOpu(n_in=100, n_out=30, seed=2, noise_seed=9)
    frames = np.random.default_rng(3).random((17, 100)) < 0.5
    server = serve(device)
    try:
        with opu.open_device(f"grpc://{server.address}") as client:
            got = client.transform(frames)
    finally:
        server.stop(grace_s=0)
    np.testing.assert_array_equal(got.counts, reference.transform(frames, 30, 400.0))
    assert got.info.frames == 17 and got.info.device_time_end_ns == 17 * 500_000
