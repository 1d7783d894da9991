"""The server adapter: any Python object that takes frames, served as ``opu.v1.OpuDevice``.

The bring-up kit for a real device (docs/python.md): wrap the vendor's driver in an object with

- ``info``: a ``DeviceInfo`` (or a dict of its fields; or a method returning either) with at least
  ``max_n_in``, ``max_n_out``, ``adc_bits``, ``frametime_us``, ``exposure_us``;
- ``transform(frames, n_out, exposure_us)``: ``frames`` a (batch, n_in) bool array, ``n_out`` the
  pixels to read, ``exposure_us`` the exposure (the device default when the request says 0);
  returns (batch, n_out) integer counts in [0, 2^adc_bits - 1], or ``(counts, FrameInfo)`` when the
  device keeps its own clock;
- optionally ``linear_transform(values, n_out, options)``: (batch, n_in) float32 values and
  ``LinearOptions``, returning (batch, n_out) projections (or ``(projections, FrameInfo)``).
  Without it ``LinearTransform`` answers UNIMPLEMENTED and ``supports_linear`` is false: the C++
  client (opu-train, opu-calibrate) then linearises on its side from ``Transform`` frames.

and call ``serve(device, listen="0.0.0.0:50051", ...)``. The adapter validates every request with
opu-serve's rules and status codes before the device sees it, so the driver receives only
well-formed calls; calls reach the device one at a time (frames of concurrent requests never
interleave); an exception escaping the driver is INTERNAL, logged, and the server serves on; the
health service and server reflection are on and not behind the token; TLS and a bearer token are
options, as for opu-serve.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hmac
import logging
import math
import threading
import time
from typing import Any

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message import DecodeError

from . import errors
from ._proto import health_pb, pb, reflection_pb
from .client import DeviceInfo, FrameInfo, LinearOptions, split_host_port

log = logging.getLogger("opu_toolkit.server")

SERVICE = "opu.v1.OpuDevice"
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
_ENCODING_NAMES = {pb.TERNARY: "ternary", pb.BITPLANES: "bitplanes", pb.STOCHASTIC: "stochastic"}


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _invalid(message: str) -> _Abort:
    return _Abort(grpc.StatusCode.INVALID_ARGUMENT, message)


def _out_of_range(message: str) -> _Abort:
    return _Abort(grpc.StatusCode.OUT_OF_RANGE, message)


def _device_info(device: Any) -> DeviceInfo:
    info = device.info() if callable(getattr(device, "info", None)) else getattr(device, "info")
    if isinstance(info, dict):
        info = DeviceInfo(**info)
    elif not isinstance(info, DeviceInfo):
        info = DeviceInfo.from_wire(info)
    for name in ("max_n_in", "max_n_out"):
        if getattr(info, name) < 1:
            raise errors.InvalidArgumentError(f"serve: device info {name} is "
                                              f"{getattr(info, name)}, want >= 1")
    if not 1 <= info.adc_bits <= 16:
        raise errors.InvalidArgumentError(f"serve: device info adc_bits is {info.adc_bits}, "
                                          "want 1..16")
    if not info.frametime_us > 0:
        raise errors.InvalidArgumentError(f"serve: device info frametime_us is "
                                          f"{info.frametime_us}, want > 0 (device time per frame)")
    return info


def _check_shape(r, info: DeviceInfo, at: str, batch_hint: str) -> None:
    """opu-serve's wire checks (offload/src/server.cpp, check_request), same order and words."""
    if r.n_in <= 0:
        raise _invalid(f"{at}: n_in is {r.n_in}, want >= 1")
    if r.n_out <= 0:
        raise _invalid(f"{at}: n_out is {r.n_out}, want >= 1")
    if r.batch <= 0:
        raise _invalid(f"{at}: batch is {r.batch}, want >= 1")
    if r.n_in > info.max_n_in:
        raise _out_of_range(f"{at}: n_in {r.n_in} above device max_n_in {info.max_n_in}")
    if r.n_out > info.max_n_out:
        raise _out_of_range(f"{at}: n_out {r.n_out} above device max_n_out {info.max_n_out}")
    if info.max_batch > 0 and r.batch > info.max_batch:
        raise _out_of_range(f"{at}: batch {r.batch} above device max_batch {info.max_batch}"
                            f"{batch_hint}")


def _check_exposure(at: str, exposure_us: float, info: DeviceInfo, zero_means: str) -> None:
    if not math.isfinite(exposure_us) or exposure_us < 0:
        raise _invalid(f"{at}: exposure_us is {exposure_us:f}, want a finite value >= 0 "
                       f"(0 = {zero_means})")
    if info.max_exposure_us > 0 and exposure_us > info.max_exposure_us:
        raise _out_of_range(f"{at}: exposure_us {exposure_us:f} above device max_exposure_us "
                            f"{info.max_exposure_us:f}")


@dataclasses.dataclass
class ServerStats:
    requests: int = 0
    get_info: int = 0
    frames: int = 0
    errors: dict = dataclasses.field(default_factory=dict)
    in_flight: int = 0


class _Service:
    def __init__(self, device: Any, info: DeviceInfo, token: str, max_inflight: int,
                 serve_linear: bool, max_message_bytes: int):
        self.device = device
        self.linear = serve_linear and callable(getattr(device, "linear_transform", None))
        self.info = dataclasses.replace(info, supports_linear=self.linear,
                                        max_message_bytes=max_message_bytes,
                                        api_version=info.api_version or "opu.v1")
        self.wire_info = self.info.to_wire().SerializeToString()
        self.token = token
        self.max_inflight = max_inflight
        self.device_lock = threading.Lock()  # one physical timeline
        self.clock_ns = 0  # the adapter's device clock, for devices that keep none
        self.stats = ServerStats()
        self.stats_lock = threading.Lock()
        self.draining = False
        self.idle = threading.Condition(self.stats_lock)

    # -- the guard --

    def _authenticate(self, context) -> None:
        if not self.token:
            return
        value = dict(context.invocation_metadata()).get("authorization")
        if value is None:
            raise _Abort(grpc.StatusCode.UNAUTHENTICATED,
                         "missing authorization metadata, want 'authorization: Bearer <token>'")
        if not value.startswith("Bearer "):
            raise _Abort(grpc.StatusCode.UNAUTHENTICATED,
                         "authorization metadata is not 'Bearer <token>'")
        if not hmac.compare_digest(value[7:].encode(), self.token.encode()):
            raise _Abort(grpc.StatusCode.UNAUTHENTICATED, "wrong bearer token")

    def guarded(self, rpc: str, context, body, is_request: bool = True):
        """Authentication, admission, and every failure as a status: nothing a client sends
        escapes as an exception (gRPC would answer UNKNOWN)."""
        status: _Abort | None = None
        result = None
        admitted = False
        try:
            self._authenticate(context)
            with self.stats_lock:
                self.stats.in_flight += 1
                admitted = True
                running = self.stats.in_flight
            if self.draining:
                raise _Abort(grpc.StatusCode.UNAVAILABLE, f"{rpc}: server shutting down")
            if running > self.max_inflight:
                raise _Abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                             f"{rpc}: server busy, {running} requests in flight, limit "
                             f"{self.max_inflight}; retry later")
            result = body()
        except _Abort as e:
            status = e
        except errors.OpuError as e:  # the driver's own status
            status = _Abort(e.code, f"{rpc}: {e.message}")
        except MemoryError:
            status = _Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{rpc}: out of memory")
        except Exception as e:  # noqa: BLE001 - a bug in the driver: INTERNAL, logged, serve on
            log.warning("%s failed: unexpected exception", rpc, exc_info=True)
            status = _Abort(grpc.StatusCode.INTERNAL,
                            f"{rpc}: unexpected exception: {type(e).__name__}: {e}")
        finally:
            with self.stats_lock:
                if admitted:
                    self.stats.in_flight -= 1
                    self.idle.notify_all()
                if is_request:
                    self.stats.requests += 1
                elif rpc == "GetInfo":
                    self.stats.get_info += 1
                if status is not None:
                    name = status.code.name
                    self.stats.errors[name] = self.stats.errors.get(name, 0) + 1
        if status is not None:
            context.abort(status.code, status.message)
        return result

    @staticmethod
    def _parse(message_type, data: bytes, method: str):
        try:
            return message_type.FromString(data)
        except DecodeError:
            raise _invalid(f"/{SERVICE}/{method}: the request is not a valid protobuf message of "
                           "its type (opu/v1/opu.proto)") from None

    def _finish(self, frames: int, info: FrameInfo | None, exposure_us: float) -> FrameInfo:
        """The device's FrameInfo, or one from the adapter's clock (frametime_us per frame)."""
        if info is None:
            start = self.clock_ns
            self.clock_ns += int(round(frames * self.info.frametime_us * 1000))
            info = FrameInfo(start, self.clock_ns, frames, 0, exposure_us)
        with self.stats_lock:
            self.stats.frames += info.frames
        return info

    # -- the RPCs --

    def get_info(self, request: bytes, context) -> bytes:
        def body():
            self._parse(pb.GetInfoRequest, request, "GetInfo")
            return self.wire_info

        return self.guarded("GetInfo", context, body, is_request=False)

    def _serve_transform(self, data: bytes, rpc: str, method: str):
        r = self._parse(pb.TransformRequest, data, method)
        info = self.info
        _check_shape(r, info, rpc, "; split it or use TransformStream")
        frame_bytes = (r.n_in + 7) // 8
        want = r.batch * frame_bytes
        if len(r.inputs) != want:
            raise _invalid(f"{rpc}: inputs has {len(r.inputs)} bytes, want batch*ceil(n_in/8) = "
                           f"{want}")
        _check_exposure(rpc, r.exposure_us, info, "device default")
        packed = np.frombuffer(r.inputs, dtype=np.uint8).reshape(r.batch, frame_bytes)
        frames = np.unpackbits(packed, axis=1, count=r.n_in, bitorder="little").view(np.bool_)
        exposure = r.exposure_us or info.exposure_us
        with self.device_lock:
            answer = self.device.transform(frames, r.n_out, exposure)
            counts, frame_info = answer if isinstance(answer, tuple) else (answer, None)
            counts = np.asarray(counts)
            if counts.shape != (r.batch, r.n_out) or not np.issubdtype(counts.dtype, np.integer):
                raise _Abort(grpc.StatusCode.INTERNAL,
                             f"{rpc}: device returned counts of shape {counts.shape} and dtype "
                             f"{counts.dtype}, want ({r.batch}, {r.n_out}) integers")
            top = (1 << info.adc_bits) - 1
            if counts.size and (counts.min() < 0 or counts.max() > top):
                raise _Abort(grpc.StatusCode.INTERNAL,
                             f"{rpc}: device returned counts in [{counts.min()}, {counts.max()}], "
                             f"want [0, {top}] (adc_bits {info.adc_bits})")
            if frame_info is None:
                saturated = int(np.count_nonzero(counts == top))
                frame_info = self._finish(r.batch, None, exposure)
                frame_info.saturated_pixels = saturated
            else:
                frame_info = self._finish(r.batch, frame_info, exposure)
        dtype = np.uint8 if info.adc_bits <= 8 else np.dtype("<u2")
        response = pb.TransformResponse(n_out=r.n_out, batch=r.batch, request_id=r.request_id,
                                        adc_bits=info.adc_bits,
                                        frames=counts.astype(dtype, copy=False).tobytes())
        response.info.CopyFrom(pb.FrameInfo(**dataclasses.asdict(frame_info)))
        return response

    def transform(self, request: bytes, context):
        return self.guarded("Transform", context,
                            lambda: self._serve_transform(request, "Transform", "Transform"))

    def transform_stream(self, requests, context):
        # The stream as a whole passes authentication and admission; each message is validated,
        # served and counted on its own. An invalid message ends the stream with its status;
        # answers already sent stand.
        self.guarded("TransformStream", context, lambda: None, is_request=False)
        for data in requests:
            status = response = None
            try:
                response = self._serve_transform(data, "TransformStream", "TransformStream")
            except _Abort as e:
                status = e
            except errors.OpuError as e:
                status = _Abort(e.code, f"TransformStream: {e.message}")
            except Exception as e:  # noqa: BLE001 - a bug in the driver
                log.warning("TransformStream failed: unexpected exception", exc_info=True)
                status = _Abort(grpc.StatusCode.INTERNAL,
                                f"TransformStream: unexpected exception: {type(e).__name__}: {e}")
            with self.stats_lock:
                self.stats.requests += 1
                if status is not None:
                    name = status.code.name
                    self.stats.errors[name] = self.stats.errors.get(name, 0) + 1
            if status is not None:
                context.abort(status.code, status.message)
            yield response

    def _serve_linear(self, data: bytes):
        at = "LinearTransform"
        r = self._parse(pb.LinearTransformRequest, data, "LinearTransform")
        if not self.linear:
            raise _Abort(grpc.StatusCode.UNIMPLEMENTED,
                         "LinearTransform: this device takes frames only (supports_linear = "
                         "false); linearise from Transform frames on the client side")
        info = self.info
        _check_shape(r, info, at, "; split it")
        want = 4 * r.batch * r.n_in
        if len(r.values) != want:
            raise _invalid(f"{at}: values has {len(r.values)} bytes, want 4*batch*n_in = {want}")
        if r.encoding not in _ENCODING_NAMES:
            raise _invalid(f"{at}: encoding {r.encoding} unknown, want TERNARY (1), BITPLANES (2) "
                           "or STOCHASTIC (3)")
        values = np.frombuffer(r.values, dtype="<f4").reshape(r.batch, r.n_in)
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.argmax(bad.ravel()))
            raise _invalid(f"{at}: values[{i}] (sample {i // r.n_in}, feature {i % r.n_in}) is "
                           f"{float(values.ravel()[i]):f}, want a finite number")
        options = LinearOptions(
            encoding=_ENCODING_NAMES[r.encoding], threshold=r.threshold,
            bitplanes=r.bitplanes if r.encoding != pb.TERNARY else 4,
            dither_seed=r.dither_seed, share_frames=r.share_frames,
            repeats=r.repeats or 1, reference_repeats=r.reference_repeats,
            reference_max_age_s=r.reference_max_age_s, exposure_us=r.exposure_us)
        try:
            options.validate(at)
        except errors.InvalidArgumentError as e:
            raise _invalid(e.message) from None
        _check_exposure(at, r.exposure_us, info, "automatic")
        with self.device_lock:
            answer = self.device.linear_transform(values, r.n_out, options)
            projections, frame_info = answer if isinstance(answer, tuple) else (answer, None)
            projections = np.asarray(projections)
            if projections.shape != (r.batch, r.n_out):
                raise _Abort(grpc.StatusCode.INTERNAL,
                             f"{at}: device returned projections of shape {projections.shape}, "
                             f"want ({r.batch}, {r.n_out})")
            frame_info = self._finish(0 if frame_info is None else frame_info.frames,
                                      frame_info, r.exposure_us)
        response = pb.LinearTransformResponse(
            n_out=r.n_out, batch=r.batch, request_id=r.request_id,
            projections=np.ascontiguousarray(projections, dtype="<f4").tobytes())
        response.info.CopyFrom(pb.FrameInfo(**dataclasses.asdict(frame_info)))
        return response

    def linear_transform(self, request: bytes, context):
        return self.guarded("LinearTransform", context, lambda: self._serve_linear(request))


class _Health:
    """grpc.health.v1.Health: SERVING for "" and opu.v1.OpuDevice until shutdown begins."""

    def __init__(self):
        self.serving = True
        self.changed = threading.Condition()

    def status(self, service: str):
        if service not in ("", SERVICE):
            return None
        return (health_pb.HealthCheckResponse.SERVING if self.serving
                else health_pb.HealthCheckResponse.NOT_SERVING)

    def check(self, request, context):
        status = self.status(request.service)
        if status is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service '{request.service}'")
        return health_pb.HealthCheckResponse(status=status)

    def watch(self, request, context):
        last = None
        while context.is_active():
            status = self.status(request.service)
            if status is None:
                status = health_pb.HealthCheckResponse.SERVICE_UNKNOWN
            if status != last:
                yield health_pb.HealthCheckResponse(status=status)
                last = status
            with self.changed:
                self.changed.wait(timeout=1.0)

    def shutdown(self):
        with self.changed:
            self.serving = False
            self.changed.notify_all()


def _reflection(requests, context):
    """grpc.reflection.v1alpha: list services, files by name or by symbol (with dependencies)."""
    pool = descriptor_pool.Default()

    def files(file_descriptor, seen):
        out = []
        if file_descriptor.name in seen:
            return out
        seen.add(file_descriptor.name)
        proto = descriptor_pb2.FileDescriptorProto()
        file_descriptor.CopyToProto(proto)
        out.append(proto.SerializeToString())
        for dep in file_descriptor.dependencies:
            out += files(dep, seen)
        return out

    for request in requests:
        response = reflection_pb.ServerReflectionResponse(valid_host=request.host,
                                                          original_request=request)
        kind = request.WhichOneof("message_request")
        try:
            if kind == "list_services":
                for name in (SERVICE, HEALTH_SERVICE, REFLECTION_SERVICE):
                    response.list_services_response.service.add(name=name)
            elif kind == "file_by_filename":
                response.file_descriptor_response.file_descriptor_proto.extend(
                    files(pool.FindFileByName(request.file_by_filename), set()))
            elif kind == "file_containing_symbol":
                response.file_descriptor_response.file_descriptor_proto.extend(
                    files(pool.FindFileContainingSymbol(request.file_containing_symbol), set()))
            else:
                response.error_response.error_code = grpc.StatusCode.UNIMPLEMENTED.value[0]
                response.error_response.error_message = f"{kind} is not supported"
        except KeyError as e:
            response.ClearField("message_response")
            response.error_response.error_code = grpc.StatusCode.NOT_FOUND.value[0]
            response.error_response.error_message = f"not found: {e}"
        yield response


class Server:
    """A running adapter: ``address`` (HOST:PORT actually bound), ``stop()``, ``stats()``."""

    def __init__(self, grpc_server, service: _Service, health: _Health, address: str, port: int):
        self._server, self._service, self._health = grpc_server, service, health
        self.address, self.port = address, port
        self._stopped = False

    def stats(self) -> ServerStats:
        with self._service.stats_lock:
            return dataclasses.replace(self._service.stats, errors=dict(self._service.stats.errors))

    def stop(self, grace_s: float = 30.0) -> None:
        """Health NOT_SERVING, new calls UNAVAILABLE, calls in flight finish (up to grace_s),
        then the server closes."""
        if self._stopped:
            return
        self._stopped = True
        self._health.shutdown()
        service = self._service
        with service.stats_lock:
            service.draining = True
            end = time.monotonic() + grace_s
            while service.stats.in_flight > 0 and time.monotonic() < end:
                service.idle.wait(timeout=max(0.0, end - time.monotonic()))
        self._server.stop(grace=min(grace_s, 2.0)).wait()

    def wait(self) -> None:
        self._server.wait_for_termination()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop(grace_s=0.0)


def serve(device: Any, listen: str = "127.0.0.1:0", *, tls_cert: bytes | None = None,
          tls_key: bytes | None = None, token: str = "", max_message_mb: float = 64,
          max_inflight: int = 64, max_workers: int = 8, serve_linear: bool = True) -> Server:
    """Serves ``device`` as opu.v1.OpuDevice on ``listen`` (port 0 picks a free port; the bound
    address is ``Server.address``). TLS with ``tls_cert`` and ``tls_key`` (PEM bytes), a bearer
    token with ``token``; options as opu-serve's flags of the same names (docs/offload.md)."""
    info = _device_info(device)
    if not callable(getattr(device, "transform", None)):
        raise errors.InvalidArgumentError(f"serve: device {type(device).__name__} has no "
                                          "transform(frames, n_out, exposure_us) method")
    if (tls_cert is None) != (tls_key is None):
        raise errors.InvalidArgumentError("serve: TLS needs both a certificate and its key, got "
                                          f"only the {'key' if tls_cert is None else 'certificate'}")
    if not 0.004 <= max_message_mb <= 2047:
        raise errors.InvalidArgumentError(f"serve: max_message_mb is {max_message_mb}, want a "
                                          "number in [0.004, 2047]")
    if not (isinstance(max_inflight, int) and 1 <= max_inflight <= 1_000_000):
        raise errors.InvalidArgumentError(f"serve: max_inflight is {max_inflight}, want an "
                                          "integer in [1, 1000000]")
    host, _ = split_host_port(listen, allow_port_zero=True)
    limit = int(max_message_mb * (1 << 20))
    service = _Service(device, info, token.strip(), max_inflight, serve_linear, limit)
    health = _Health()
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=max_workers,
                                                     thread_name_prefix="opu-adapter")
    server = grpc.server(executor, options=[
        ("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
        ("grpc.so_reuseport", 0), ("grpc.http2.lookahead_bytes", 16 << 20),
        ("grpc.http2.max_frame_size", (1 << 24) - 1)])

    # No request deserializer: requests arrive as bytes and are parsed inside the guard, so a
    # malformed one is INVALID_ARGUMENT, as opu-serve answers it (gRPC would say INTERNAL).
    opu_handlers = {
        "GetInfo": grpc.unary_unary_rpc_method_handler(
            service.get_info),
        "Transform": grpc.unary_unary_rpc_method_handler(
            service.transform, response_serializer=pb.TransformResponse.SerializeToString),
        "TransformStream": grpc.stream_stream_rpc_method_handler(
            service.transform_stream, response_serializer=pb.TransformResponse.SerializeToString),
        "LinearTransform": grpc.unary_unary_rpc_method_handler(
            service.linear_transform,
            response_serializer=pb.LinearTransformResponse.SerializeToString),
    }
    health_handlers = {
        "Check": grpc.unary_unary_rpc_method_handler(
            health.check, request_deserializer=health_pb.HealthCheckRequest.FromString,
            response_serializer=health_pb.HealthCheckResponse.SerializeToString),
        "Watch": grpc.unary_stream_rpc_method_handler(
            health.watch, request_deserializer=health_pb.HealthCheckRequest.FromString,
            response_serializer=health_pb.HealthCheckResponse.SerializeToString),
    }
    reflection_handlers = {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            _reflection, request_deserializer=reflection_pb.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb.ServerReflectionResponse.SerializeToString),
    }
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler(SERVICE, opu_handlers),
        grpc.method_handlers_generic_handler(HEALTH_SERVICE, health_handlers),
        grpc.method_handlers_generic_handler(REFLECTION_SERVICE, reflection_handlers)))
    if tls_cert is not None:
        credentials = grpc.ssl_server_credentials([(tls_key, tls_cert)])
        port = server.add_secure_port(listen, credentials)
    else:
        port = server.add_insecure_port(listen)
    if port == 0:
        raise errors.UnavailableError(f"serve: cannot listen on '{listen}' (address in use, not "
                                      "local, or a bad certificate/key)")
    server.start()
    log.info("serving %s on %s:%d%s%s", SERVICE, host, port,
             " (TLS)" if tls_cert else " (plaintext)", " with bearer token" if token else "")
    return Server(server, service, health, f"{host}:{port}", port)
