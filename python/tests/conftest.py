"""Fixtures: opu-serve processes and Python adapters on 127.0.0.1 port 0, the C++ reference tool.

Nothing sleeps: an opu-serve is ready when it has printed its address (its first line, written
after the port is bound), a Python adapter when serve() returns (its port is bound and started);
clients then connect with their own deadlines. No external network.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from opu_toolkit.client import ServeProcess, find_opu_serve

REPO = Path(__file__).resolve().parents[2]


def _tool(env: str, relative: str) -> str:
    path = os.environ.get(env) or str(REPO / relative)
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} not built: build the dev preset (cmake --build --preset dev), or set "
                    f"{env}")
    return path


@pytest.fixture(scope="session")
def opu_serve() -> str:
    # The dev build, which scripts/run_tests.sh has just built (OPU_SERVE overrides).
    os.environ.setdefault("OPU_SERVE", str(REPO / "build/dev/offload/opu-serve"))
    return find_opu_serve()


@pytest.fixture(scope="session")
def device_call() -> str:
    return _tool("OPU_DEVICE_CALL", "build/dev/tests/offload/opu-device-call")


@pytest.fixture(scope="session")
def opu_train() -> str:
    return _tool("OPU_TRAIN", "build/dev/trainer/opu-train")


@pytest.fixture
def serve_process(opu_serve):
    """serve_process(*args) -> a started opu-serve (stopped at the end of the test)."""
    started = []

    def start(*args, listen="127.0.0.1:0"):
        process = ServeProcess(["--log-level", "warn", "--summary-interval-s", "0", *args],
                               listen=listen)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def cpp_call(tool: str, uri: str, call: str, payload: bytes, tmp_path: Path, **args):
    """One call through the C++ open_device(): (answer bytes, FrameInfo dict)."""
    src, dst = tmp_path / f"{call}.in", tmp_path / f"{call}.out"
    src.write_bytes(payload)
    cmd = [tool, uri, call, f"in={src}", f"out={dst}"]
    cmd += [f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in args.items()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return dst.read_bytes(), json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def rng():
    return np.random.default_rng(20240519)  # fixed seed: every test sees the same data
