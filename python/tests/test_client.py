"""The client: same bits as the C++ device and client, URIs, chunking, replicas, TLS, retries."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

import opu_toolkit as opu
from opu_toolkit.client import LinearOptions, RemoteDevice, remote_options_from_uri

from conftest import cpp_call

# Realistic camera (shot + read noise, 8-bit counts): the noise is a pure function of (noise seed,
# frame index), so a fresh server's first call and a fresh in-process device's first call agree
# bit for bit. n_in = 200 is not a multiple of 8 (the last byte of each packed frame is partial).
SIM = "seed=7&n_in=200&n_out=96&camera=realistic&max_batch=512"


def test_transform_equals_the_cpp_device_bit_for_bit(device_call, tmp_path, rng):
    frames = rng.random((37, 200)) < 0.5
    with opu.open_device(f"sim://?{SIM}") as device:
        got = device.transform(frames, n_out=96)
    packed = np.packbits(frames, axis=1, bitorder="little").tobytes()
    want, info = cpp_call(device_call, f"sim://?{SIM}", "transform", packed, tmp_path,
                          n_in=200, n_out=96, batch=37)
    assert got.counts.dtype == np.uint8 and got.counts.shape == (37, 96)
    assert got.counts.tobytes() == want
    assert got.info.frames == info["frames"] == 37
    assert got.info.device_time_start_ns == info["device_time_start_ns"]
    assert got.info.device_time_end_ns == info["device_time_end_ns"]
    assert got.info.saturated_pixels == info["saturated_pixels"]


@pytest.mark.parametrize("options", [
    LinearOptions(),  # the literal scheme: ternary, threshold 0.1
    LinearOptions(encoding="bitplanes", bitplanes=3, repeats=2),
    LinearOptions(encoding="stochastic", bitplanes=2, share_frames=True, repeats=4,
                  reference_repeats=64, dither_seed=11),
], ids=["ternary", "bitplanes", "stochastic"])
def test_linear_transform_equals_the_cpp_client(device_call, serve_process, tmp_path, rng,
                                                 options):
    values = rng.standard_normal((9, 10)).astype(np.float32)
    params = SIM.replace("&", " --param ").split(" ")
    args = ["--param", *params]
    # Two fresh servers with the same parameters: one answers Python, one the C++ RemoteDevice.
    ours, theirs = serve_process(*args), serve_process(*args)
    with opu.open_device(f"grpc://{ours.address}") as device:
        got = device.linear_transform(values, n_out=96, options=options)
    want, info = cpp_call(
        device_call, f"grpc://{theirs.address}", "linear", values.tobytes(), tmp_path,
        n_in=10, n_out=96, batch=9, encoding=options.encoding, threshold=options.threshold,
        bitplanes=options.bitplanes, dither_seed=options.dither_seed,
        share_frames=options.share_frames, repeats=options.repeats,
        reference_repeats=options.reference_repeats)
    assert got.values.dtype == np.float32 and got.values.shape == (9, 96)
    assert got.values.tobytes() == want
    assert got.info.frames == info["frames"]
    assert got.info.device_time_end_ns == info["device_time_end_ns"]


def test_one_vector_and_torch_input(serve_process):
    torch = pytest.importorskip("torch")
    server = serve_process("--seed", "3", "--n-in", "128", "--n-out", "32", "--camera", "ideal")
    with opu.open_device(f"grpc://{server.address}") as device:
        batch = device.linear_transform(torch.arange(5, dtype=torch.float32)[None, :] - 2.0,
                                        n_out=32)
        one = device.linear_transform(np.arange(5, dtype=np.float64) - 2.0, n_out=32)
    assert batch.values.shape == (1, 32) and one.values.shape == (32,)
    # Ideal camera, no drift: the same vector gives the same projection in every call.
    np.testing.assert_array_equal(batch.values[0], one.values)


def test_batches_above_the_message_limit_are_split(serve_process, rng):
    # A 0.05 MiB server limit: 52,428 bytes. 600 frames of 1024 pixels answer 614,400 bytes, so
    # the client splits them into chunks of 50 over one TransformStream.
    args = ["--seed", "5", "--n-in", "64", "--n-out", "1024", "--camera", "ideal"]
    small = serve_process(*args, "--max-message-mb", "0.05")
    large = serve_process(*args)
    frames = rng.random((600, 64)) < 0.5
    with opu.open_device(f"grpc://{small.address}") as a, \
            opu.open_device(f"grpc://{large.address}") as b:
        split, whole = a.transform(frames), b.transform(frames)
        assert a.stats["chunked_calls"] == 1 and b.stats["chunked_calls"] == 0
        lin_split = a.linear_transform(rng.standard_normal((40, 20)), n_out=1024)
        assert a.stats["chunked_calls"] == 2
    np.testing.assert_array_equal(split.counts, whole.counts)  # ideal camera: deterministic
    assert split.info.frames == 600
    assert split.info.device_time_end_ns - split.info.device_time_start_ns == 600 * 500_000
    assert lin_split.values.shape == (40, 1024)


def test_round_robin_over_two_replicas(serve_process):
    args = ["--seed", "7", "--n-in", "64", "--n-out", "16", "--camera", "ideal"]
    a, b = serve_process(*args), serve_process(*args)
    frames = np.eye(64, dtype=bool)[:1]
    with opu.open_device(f"grpc://{a.address},{b.address}") as device:
        # One replica's clock only moves forward: a start time seen twice means two clocks, i.e.
        # calls reached both replicas. round_robin uses a replica once its connection is ready;
        # on a loaded machine the second may take a while, so first call until both have
        # answered (bounded by calls and time, never a sleep), then check the alternation.
        seen, end = set(), time.monotonic() + 30
        while time.monotonic() < end:
            start = device.transform(frames).info.device_time_start_ns
            if start in seen:
                break
            seen.add(start)
        else:
            pytest.fail(f"one replica answered every call for 30 s: {sorted(seen)}")
        answers = [device.transform(frames) for _ in range(20)]
    starts = [r.info.device_time_start_ns for r in answers]
    # Both ready: round_robin alternates, so each start appears twice (>= 8 repeats of 10
    # possible leaves room for a reconnection).
    assert len(starts) - len(set(starts)) >= 8, starts
    for r in answers:  # the same medium: same seed, ideal camera
        np.testing.assert_array_equal(r.counts, answers[0].counts)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=opu.test", "-addext",
                    "subjectAltName=DNS:opu.test,DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")],
                   check=True, capture_output=True, timeout=60)
    (folder / "token").write_text("s3cret-token\n")
    (folder / "wrong").write_text("not-the-token")
    return folder


def test_tls_and_token_against_opu_serve(serve_process, tls_files):
    f = tls_files
    server = serve_process("--seed", "1", "--n-in", "64", "--n-out", "16",
                           "--tls-cert", str(f / "cert.pem"), "--tls-key", str(f / "key.pem"),
                           "--token-file", str(f / "token"))
    port = server.address.rsplit(":", 1)[1]
    base = f"grpcs://localhost:{port}?ca={f / 'cert.pem'}"
    with opu.open_device(f"{base}&token={f / 'token'}") as device:
        assert device.transform(np.ones((2, 64), bool)).counts.shape == (2, 16)
    with pytest.raises(opu.UnauthenticatedError) as missing:
        opu.open_device(base)
    assert missing.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "missing authorization metadata" in missing.value.message
    with pytest.raises(opu.UnauthenticatedError, match="wrong bearer token"):
        opu.open_device(f"{base}&token={f / 'wrong'}")
    # Plaintext against the TLS port: UNAVAILABLE after its retries, never a hang.
    with pytest.raises(opu.UnavailableError, match="unavailable after 2 attempts"):
        opu.open_device(f"grpc://127.0.0.1:{port}?retries=2&backoff_ms=10&deadline_ms=5000")


def test_retries_then_unavailable_on_a_closed_port(serve_process):
    server = serve_process("--n-in", "64", "--n-out", "16")
    address = server.address
    server.stop()  # the port is now closed
    with pytest.raises(opu.UnavailableError) as e:
        RemoteDevice(remote_options_from_uri(f"grpc://{address}?retries=3&backoff_ms=10"))
    assert e.value.code == grpc.StatusCode.UNAVAILABLE
    assert f"GetInfo on grpc://{address}: unavailable after 3 attempts" in e.value.message


def test_a_restarted_server_is_found_by_the_retries(serve_process):
    args = ["--n-in", "64", "--n-out", "16", "--camera", "ideal"]
    first = serve_process(*args)
    device = opu.open_device(f"grpc://{first.address}?backoff_ms=20&retries=50")
    first.stop()
    again = serve_process(*args, listen=first.address)  # the same port
    assert again.address == first.address
    frames = device.transform(np.ones((1, 64), bool))
    assert frames.info.device_time_start_ns == 0  # the new server's first frame
    device.close()


def test_deadline_exceeded(serve_process):
    server = serve_process("--n-in", "4096", "--n-out", "4096", "--camera", "realistic",
                           "--medium", "streamed")
    # 1 ms for 512 streamed 4096 x 4096 frames (tens of ms of compute): DEADLINE_EXCEEDED.
    # (The URI's deadline_ms=1 would apply to the GetInfo of the connection too.)
    with opu.open_device(f"grpc://{server.address}") as device:
        device.options.deadline_s = 0.001
        with pytest.raises(opu.DeadlineExceededError) as e:
            device.transform(np.ones((512, 4096), bool))
    assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_sim_uri_starts_and_stops_a_local_server():
    device = opu.open_device("sim://?seed=3&n_in=64&n_out=8")
    assert device.info().max_n_in == 64 and device.info().simulated
    process = device.server.proc
    assert device.server.address.startswith("127.0.0.1:")
    device.close()
    assert process.returncode == 0  # SIGTERM: a graceful exit


@pytest.mark.parametrize("uri, cls, words", [
    ("sim://?seed=-1", opu.InvalidArgumentError, ["seed", "-1"]),
    ("sim://?frob=1", opu.InvalidArgumentError, ["frob"]),
    ("sim://host?seed=1", opu.InvalidArgumentError, ["takes no host or path"]),
    ("sim://?seed=1&seed=2", opu.InvalidArgumentError, ["'seed' is given twice"]),
    ("grpc://host", opu.InvalidArgumentError, ["address 'host' has no port, want HOST:PORT"]),
    ("grpc://h:1?frob=2", opu.InvalidArgumentError, ["unknown parameter 'frob'"]),
    ("grpc://h:1?ca=x.pem", opu.InvalidArgumentError, ["ca= in", "needs grpcs://"]),
    ("grpc://h:1?deadline_ms=0", opu.InvalidArgumentError,
     ["deadline_ms='0'", "not a positive integer"]),
    ("grpc://h:1?token=/nonexistent/token", opu.NotFoundError, ["/nonexistent/token"]),
    ("grpc://h:99999", opu.InvalidArgumentError, ["port '99999' is not a number in 1..65535"]),
    ("http://h:1", opu.InvalidArgumentError, ["scheme 'http'", "want sim://, grpc:// or grpcs://"]),
])
def test_bad_uris_name_the_part(uri, cls, words):
    with pytest.raises(cls) as e:
        opu.open_device(uri)
    for word in words:
        assert word in e.value.message


@pytest.fixture(scope="module")
def small_device():
    with opu.open_device("sim://?seed=2&n_in=64&n_out=16&max_batch=100") as device:
        yield device


@pytest.mark.parametrize("call, cls, words", [
    (lambda d: d.transform(np.ones((2, 3, 4), bool)), opu.InvalidArgumentError,
     ["frames has shape (2, 3, 4)", "want (batch, n_in)"]),
    (lambda d: d.transform(np.ones((2, 64), np.float32)), opu.InvalidArgumentError,
     ["frames has dtype float32", "want bool or uint8"]),
    (lambda d: d.transform(np.full((2, 64), 3, np.uint8)), opu.InvalidArgumentError,
     ["frames[0, 0] is 3, want 0 or 1"]),
    (lambda d: d.transform(np.ones((2, 65), bool)), opu.OutOfRangeError,
     ["Transform: n_in 65 above device max_n_in 64"]),
    (lambda d: d.transform(np.ones((2, 64), bool), n_out=17), opu.OutOfRangeError,
     ["n_out 17 above device max_n_out 16"]),
    (lambda d: d.transform(np.ones((2, 64), bool), n_out=0), opu.InvalidArgumentError,
     ["n_out is 0, want an integer >= 1"]),
    (lambda d: d.transform(np.ones((2, 64), bool), exposure_us=-1), opu.InvalidArgumentError,
     ["exposure_us is -1"]),
    (lambda d: d.transform(np.ones((2, 64), bool), exposure_us=1e9), opu.OutOfRangeError,
     ["above device max_exposure_us"]),
    (lambda d: d.linear_transform(np.array([[1.0, np.nan, 2.0]])), opu.InvalidArgumentError,
     ["values[1] (sample 0, feature 1) is nan, want a finite number"]),
    (lambda d: d.linear_transform(np.ones((2, 3)), encoding="binary"), opu.InvalidArgumentError,
     ["encoding 'binary' unknown"]),
    (lambda d: d.linear_transform(np.ones((2, 3)), repeats=65), opu.InvalidArgumentError,
     ["repeats is 65, want 1..64"]),
    (lambda d: d.linear_transform(np.ones((2, 3)), threshold=1.0), opu.InvalidArgumentError,
     ["threshold is 1.0", "[0, 1)"]),
    (lambda d: d.linear_transform(np.ones((2, 3)), encoding="bitplanes", bitplanes=0),
     opu.InvalidArgumentError, ["bitplanes is 0, want 1..16"]),
    (lambda d: d.linear_transform(np.ones((2, 3)), reference_repeats=2000),
     opu.InvalidArgumentError, ["reference_repeats is 2000"]),
    (lambda d: d.linear_transform(np.ones((2, 3)), bogus=1), opu.InvalidArgumentError,
     ["unknown option(s) bogus"]),
    # Passes the client's checks, refused by the device: the server's code and message.
    (lambda d: d.linear_transform(np.ones((2, 60))), opu.OpuError, ["LinearTransform"]),
])
def test_bad_calls_raise_with_code_and_message_and_the_device_serves_on(small_device, call, cls,
                                                                        words):
    with pytest.raises(cls) as e:
        call(small_device)
    for word in words:
        assert word in e.value.message, e.value.message
    assert isinstance(e.value.code, grpc.StatusCode)
    # The next good call is answered.
    assert small_device.transform(np.ones((3, 64), bool)).counts.shape == (3, 16)


def test_server_errors_keep_code_and_message(small_device):
    # 60 features + 8 reference blocks do not fit 64 mirrors: the server says so.
    with pytest.raises(opu.OpuError) as e:
        small_device.linear_transform(np.ones((2, 60)))
    print(e.value)
    assert e.value.code in (grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.INVALID_ARGUMENT,
                            grpc.StatusCode.FAILED_PRECONDITION)
    assert e.value.server_message.startswith("LinearTransform")


def test_batches_above_max_batch_are_split(small_device, rng):
    frames = rng.random((250, 64)) < 0.5
    got = small_device.transform(frames)
    assert got.counts.shape == (250, 16) and got.info.frames == 250
