"""A small frames-only OPU in numpy: the stand-in for a vendor's driver behind ``serve()``.

``FakeOpu`` has a seeded complex Gaussian medium R (n_out x n_in, entries CN(0, 1)), and a camera
that reads |R x|^2 with Poisson shot noise, Gaussian read noise, a dark offset, a gain and
``adc_bits``-bit counts clipped at full scale. Its scale follows the simulator's defaults
(README, "The simulated device"): a half-on frame reads about 20 counts at the default 400 us
exposure; the count is linear in the exposure. It has no ``linear_transform``: served, it answers
``LinearTransform`` with UNIMPLEMENTED, and the C++ client linearises from its frames
(holography), which is how opu-train trains DFA against it (python/tests/test_adapter.py).

    python3 -m opu_toolkit.fake --listen 127.0.0.1:0 --n-in 1024 --n-out 256
    # first line on stdout: the bound address, as opu-serve
"""

from __future__ import annotations

import argparse
import sys
import threading

import numpy as np

from .client import DeviceInfo


class FakeOpu:
    def __init__(self, n_in: int = 1024, n_out: int = 256, seed: int = 1, noise_seed: int = 0,
                 adc_bits: int = 8, exposure_us: float = 400.0, gain_e_per_count: float = 40.0,
                 read_noise_e: float = 10.0, dark_offset_counts: float = 2.0,
                 half_on_counts: float = 20.0, frametime_us: float = 500.0,
                 max_batch: int = 4096):
        rng = np.random.default_rng(seed)
        scale = np.float32(np.sqrt(0.5))
        self.medium = ((rng.standard_normal((n_out, n_in), dtype=np.float32)
                        + 1j * rng.standard_normal((n_out, n_in), dtype=np.float32)) * scale
                       ).astype(np.complex64)
        self.medium_t = np.ascontiguousarray(self.medium.T)
        self.noise_seed = noise_seed
        self.adc_bits = adc_bits
        self.gain = gain_e_per_count
        self.read_noise = read_noise_e
        self.dark = dark_offset_counts
        self.default_exposure = exposure_us
        # Electrons per unit intensity per microsecond: E|Rx|^2 = (mirrors on) for CN(0, 1) R,
        # so a half-on frame (n_in / 2 mirrors) reads half_on_counts at the default exposure.
        self.electrons_per_us = half_on_counts * gain_e_per_count / (n_in / 2 * exposure_us)
        self.frames_taken = 0
        self._lock = threading.Lock()
        self.info = DeviceInfo(model=f"fake numpy OPU {n_out}x{n_in}", simulated=True,
                               max_n_in=n_in, max_n_out=n_out, adc_bits=adc_bits,
                               frametime_us=frametime_us, exposure_us=exposure_us,
                               max_batch=max_batch, max_exposure_us=100_000.0)

    def intensities(self, frames: np.ndarray, n_out: int) -> np.ndarray:
        """|R x|^2 for (batch, n_in) binary frames, no noise: (batch, n_out) float64."""
        fields = frames.astype(np.float32) @ self.medium_t[:frames.shape[1], :n_out]
        return (fields.real.astype(np.float64) ** 2 + fields.imag.astype(np.float64) ** 2)

    def transform(self, frames: np.ndarray, n_out: int, exposure_us: float) -> np.ndarray:
        with self._lock:
            first = self.frames_taken
            self.frames_taken += frames.shape[0]
        rng = np.random.default_rng([self.noise_seed, first])  # noise: f(noise seed, frame index)
        electrons = rng.poisson(self.intensities(frames, n_out) * exposure_us *
                                self.electrons_per_us).astype(np.float64)
        electrons += rng.normal(0.0, self.read_noise, electrons.shape)
        counts = np.floor(electrons / self.gain + self.dark + 0.5)
        return np.clip(counts, 0, (1 << self.adc_bits) - 1).astype(
            np.uint8 if self.adc_bits <= 8 else np.uint16)


def main(argv=None) -> int:
    from .server import serve  # here: importing fake must not need the server's modules

    p = argparse.ArgumentParser(prog="python3 -m opu_toolkit.fake", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--n-in", type=int, default=1024)
    p.add_argument("--n-out", type=int, default=256)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--noise-seed", type=int, default=0)
    p.add_argument("--token-file")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    a = p.parse_args(argv)
    for name in ("n_in", "n_out"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')}: {getattr(a, name)} is out of range; expected an "
                    "integer >= 1")
    token = open(a.token_file, encoding="utf-8").read().strip() if a.token_file else ""
    cert = open(a.tls_cert, "rb").read() if a.tls_cert else None
    key = open(a.tls_key, "rb").read() if a.tls_key else None
    server = serve(FakeOpu(a.n_in, a.n_out, a.seed, a.noise_seed), a.listen, tls_cert=cert,
                   tls_key=key, token=token)
    print(server.address, flush=True)
    import signal

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
