"""The wire contract, checked with raw requests against opu-serve and against the Python adapter.

The same cases run against both servers: every malformed request gets its status code and a
message naming the field, the value and what is wanted, the server keeps serving, GetInfo,
streams, tokens, health and reflection behave alike.
"""

from __future__ import annotations

import struct

import grpc
import numpy as np
import pytest

from opu_toolkit._proto import health_pb, pb, reflection_pb
from opu_toolkit.client import DeviceInfo
from opu_toolkit.fake import FakeOpu
from opu_toolkit.server import serve

N_IN, N_OUT, MAX_BATCH = 64, 16, 100
TOKEN = "contract-token"


class LinearFake(FakeOpu):
    """FakeOpu plus a digital linear mode (an exact Gaussian B), so that the adapter's
    LinearTransform validation runs on a device that offers it."""

    def __init__(self):
        super().__init__(N_IN, N_OUT, seed=3, max_batch=MAX_BATCH)
        self.b = np.random.default_rng(4).standard_normal((N_OUT, N_IN)).astype(np.float32)

    def linear_transform(self, values, n_out, options):
        return values @ self.b[:n_out, :values.shape[1]].T


@pytest.fixture(params=["opu-serve", "adapter"], scope="module")
def server(request, tmp_path_factory):
    """(address, kind) of a server with a token, N_IN x N_OUT, max_batch MAX_BATCH."""
    if request.param == "opu-serve":
        from opu_toolkit.client import ServeProcess
        import os
        from conftest import REPO
        os.environ.setdefault("OPU_SERVE", str(REPO / "build/dev/offload/opu-serve"))
        token_file = tmp_path_factory.mktemp("token") / "token"
        token_file.write_text(TOKEN)
        process = ServeProcess(["--log-level", "off", "--n-in", str(N_IN), "--n-out", str(N_OUT),
                                "--max-batch", str(MAX_BATCH), "--token-file", str(token_file),
                                "--max-message-mb", "1"])
        yield process.address, "opu-serve"
        process.stop()
    else:
        running = serve(LinearFake(), token=TOKEN, max_message_mb=1)
        yield running.address, "adapter"
        running.stop(grace_s=0)


@pytest.fixture(scope="module")
def channel(server):
    ch = grpc.insecure_channel(server[0])
    grpc.channel_ready_future(ch).result(timeout=30)
    yield ch
    ch.close()


AUTH = (("authorization", f"Bearer {TOKEN}"),)


def unary(channel, method, request: bytes, response_type, metadata=AUTH):
    call = channel.unary_unary(f"/opu.v1.OpuDevice/{method}",
                               request_serializer=lambda b: b,
                               response_deserializer=response_type.FromString)
    return call(request, timeout=30, metadata=metadata)


def transform_request(**fields) -> bytes:
    base = dict(n_in=N_IN, n_out=N_OUT, batch=2, inputs=bytes(2 * N_IN // 8), request_id=5)
    base.update(fields)
    return pb.TransformRequest(**base).SerializeToString()


def linear_request(**fields) -> bytes:
    base = dict(n_in=4, n_out=N_OUT, batch=2, values=np.ones(8, "<f4").tobytes(),
                encoding=pb.TERNARY, threshold=0.1, request_id=6, reference_repeats=8)
    base.update(fields)
    return pb.LinearTransformRequest(**base).SerializeToString()


def assert_serves(channel):
    """A valid request right after a bad one is answered."""
    r = unary(channel, "Transform", transform_request(), pb.TransformResponse)
    assert r.batch == 2 and r.n_out == N_OUT and len(r.frames) == 2 * N_OUT and r.request_id == 5


TRANSFORM_CASES = [
    (dict(n_in=0), "INVALID_ARGUMENT", "Transform: n_in is 0, want >= 1"),
    (dict(n_out=-3), "INVALID_ARGUMENT", "Transform: n_out is -3, want >= 1"),
    (dict(batch=0, inputs=b""), "INVALID_ARGUMENT", "Transform: batch is 0, want >= 1"),
    (dict(n_in=N_IN + 1), "OUT_OF_RANGE", f"Transform: n_in {N_IN + 1} above device max_n_in {N_IN}"),
    (dict(n_out=N_OUT + 1), "OUT_OF_RANGE", f"n_out {N_OUT + 1} above device max_n_out {N_OUT}"),
    (dict(batch=MAX_BATCH + 1), "OUT_OF_RANGE", f"batch {MAX_BATCH + 1} above device max_batch"),
    (dict(batch=2**62), "OUT_OF_RANGE", "above device max_batch"),
    (dict(inputs=bytes(15)), "INVALID_ARGUMENT",
     "Transform: inputs has 15 bytes, want batch*ceil(n_in/8) = 16"),
    (dict(exposure_us=-1.0), "INVALID_ARGUMENT", "Transform: exposure_us is -1.000000"),
    (dict(exposure_us=float("nan")), "INVALID_ARGUMENT", "Transform: exposure_us is nan"),
    (dict(exposure_us=1e12), "OUT_OF_RANGE", "above device max_exposure_us"),
]


@pytest.mark.parametrize("fields, code, message", TRANSFORM_CASES,
                         ids=[c[2][:40] for c in TRANSFORM_CASES])
def test_bad_transform_requests(channel, fields, code, message):
    with pytest.raises(grpc.RpcError) as e:
        unary(channel, "Transform", transform_request(**fields), pb.TransformResponse)
    assert e.value.code().name == code
    assert message in e.value.details()
    assert_serves(channel)


NAN = struct.unpack("<f", struct.pack("<I", 0x7FC00000))[0]
LINEAR_CASES = [
    (dict(n_in=0), "INVALID_ARGUMENT", "LinearTransform: n_in is 0, want >= 1"),
    (dict(n_out=N_OUT + 1), "OUT_OF_RANGE", f"n_out {N_OUT + 1} above device max_n_out {N_OUT}"),
    (dict(values=bytes(12)), "INVALID_ARGUMENT",
     "LinearTransform: values has 12 bytes, want 4*batch*n_in = 32"),
    (dict(encoding=pb.ENCODING_UNSPECIFIED), "INVALID_ARGUMENT",
     "LinearTransform: encoding 0 unknown, want TERNARY (1), BITPLANES (2) or STOCHASTIC (3)"),
    (dict(encoding=7), "INVALID_ARGUMENT", "encoding 7 unknown"),
    (dict(values=np.array([1, 2, 3, NAN, 1, 1, 1, 1], "<f4").tobytes()), "INVALID_ARGUMENT",
     "LinearTransform: values[3] (sample 0, feature 3) is nan, want a finite number"),
    (dict(threshold=1.5), "INVALID_ARGUMENT", "threshold is 1.5"),
    (dict(encoding=pb.BITPLANES, bitplanes=17), "INVALID_ARGUMENT", "bitplanes is 17, want 1..16"),
    (dict(repeats=65), "INVALID_ARGUMENT", "repeats is 65, want 1..64"),
    (dict(reference_repeats=1025), "INVALID_ARGUMENT", "reference_repeats is 1025"),
    (dict(reference_max_age_s=-1.0), "INVALID_ARGUMENT", "reference_max_age_s is -1"),
]


@pytest.mark.parametrize("fields, code, message", LINEAR_CASES,
                         ids=[c[2][:40] for c in LINEAR_CASES])
def test_bad_linear_requests(channel, fields, code, message):
    with pytest.raises(grpc.RpcError) as e:
        unary(channel, "LinearTransform", linear_request(**fields), pb.LinearTransformResponse)
    assert e.value.code().name == code
    assert message in e.value.details()
    r = unary(channel, "LinearTransform", linear_request(), pb.LinearTransformResponse)
    assert r.batch == 2 and len(r.projections) == 2 * N_OUT * 4 and r.request_id == 6


@pytest.mark.parametrize("method", ["Transform", "LinearTransform", "GetInfo"])
def test_a_request_that_is_not_a_protobuf(channel, method):
    with pytest.raises(grpc.RpcError) as e:
        unary(channel, method, b"\xff\xff\xff\xff", pb.TransformResponse)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "the request is not a valid protobuf message of its type" in e.value.details()
    assert_serves(channel)


@pytest.mark.parametrize("metadata, message", [
    ((), "missing authorization metadata, want 'authorization: Bearer <token>'"),
    ((("authorization", "Basic abc"),), "authorization metadata is not 'Bearer <token>'"),
    ((("authorization", "Bearer nope"),), "wrong bearer token"),
])
def test_tokens(channel, metadata, message):
    with pytest.raises(grpc.RpcError) as e:
        unary(channel, "Transform", transform_request(), pb.TransformResponse, metadata=metadata)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert e.value.details() == message
    assert_serves(channel)


def test_get_info(channel, server):
    info = DeviceInfo.from_wire(unary(channel, "GetInfo", b"", pb.DeviceInfo))
    assert (info.max_n_in, info.max_n_out, info.max_batch) == (N_IN, N_OUT, MAX_BATCH)
    assert info.api_version == "opu.v1" and info.supports_linear
    assert info.max_message_bytes == 1 << 20 and 1 <= info.adc_bits <= 16
    assert info.frametime_us > 0 and info.exposure_us > 0


def test_stream_answers_in_order_then_ends_on_a_bad_message(channel):
    call = channel.stream_stream("/opu.v1.OpuDevice/TransformStream",
                                 request_serializer=lambda b: b,
                                 response_deserializer=pb.TransformResponse.FromString)
    good = [transform_request(request_id=i) for i in (11, 12)]
    answers = []
    with pytest.raises(grpc.RpcError) as e:
        for r in call(iter(good + [transform_request(n_in=0)]), timeout=30, metadata=AUTH):
            answers.append(r.request_id)
    assert answers == [11, 12]
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "TransformStream: n_in is 0, want >= 1" in e.value.details()
    assert_serves(channel)


def test_device_time_moves_forward(channel):
    first = unary(channel, "Transform", transform_request(), pb.TransformResponse).info
    second = unary(channel, "Transform", transform_request(), pb.TransformResponse).info
    assert first.frames == 2 and second.device_time_start_ns >= first.device_time_end_ns
    assert first.device_time_end_ns > first.device_time_start_ns


def test_health_and_reflection(channel):
    check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                request_serializer=health_pb.HealthCheckRequest.SerializeToString,
                                response_deserializer=health_pb.HealthCheckResponse.FromString)
    assert check(health_pb.HealthCheckRequest(), timeout=30).status == \
        health_pb.HealthCheckResponse.SERVING  # not behind the token
    reflect = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb.ServerReflectionResponse.FromString)
    requests = [reflection_pb.ServerReflectionRequest(list_services=""),
                reflection_pb.ServerReflectionRequest(file_containing_symbol="opu.v1.OpuDevice")]
    listed, found = list(reflect(iter(requests), timeout=30))
    names = {s.name for s in listed.list_services_response.service}
    assert "opu.v1.OpuDevice" in names
    from google.protobuf import descriptor_pb2
    fd = descriptor_pb2.FileDescriptorProto.FromString(
        found.file_descriptor_response.file_descriptor_proto[0])
    assert fd.name == "opu/v1/opu.proto" and fd.package == "opu.v1"
    assert [s.name for s in fd.service] == ["OpuDevice"]


def test_frames_only_adapter_answers_unimplemented():
    running = serve(FakeOpu(N_IN, N_OUT))
    try:
        ch = grpc.insecure_channel(running.address)
        info = unary(ch, "GetInfo", b"", pb.DeviceInfo, metadata=())
        assert not info.supports_linear
        with pytest.raises(grpc.RpcError) as e:
            unary(ch, "LinearTransform", linear_request(), pb.LinearTransformResponse, metadata=())
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "takes frames only" in e.value.details()
        ch.close()
    finally:
        running.stop(grace_s=0)


def test_adapter_turns_driver_bugs_into_internal_and_serves_on():
    class Flaky(FakeOpu):
        calls = 0

        def transform(self, frames, n_out, exposure_us):
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise RuntimeError("driver lost the camera")
            if Flaky.calls == 2:
                return np.full((frames.shape[0], n_out), 300)  # above 8 bits
            return super().transform(frames, n_out, exposure_us)

    running = serve(Flaky(N_IN, N_OUT))
    try:
        ch = grpc.insecure_channel(running.address)
        for words in ("unexpected exception: RuntimeError: driver lost the camera",
                      "device returned counts in [300, 300], want [0, 255]"):
            with pytest.raises(grpc.RpcError) as e:
                unary(ch, "Transform", transform_request(), pb.TransformResponse, metadata=())
            assert e.value.code() == grpc.StatusCode.INTERNAL and words in e.value.details()
        assert unary(ch, "Transform", transform_request(), pb.TransformResponse,
                     metadata=()).batch == 2
        assert running.stats().errors == {"INTERNAL": 2}
        ch.close()
    finally:
        running.stop(grace_s=0)
