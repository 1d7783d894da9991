"""The Python client of opu.v1: ``open_device(uri)`` with the C++ ``open_device()``'s URIs.

``grpc://host:port``, ``grpc://h1:p1,h2:p2`` (gRPC's round_robin over replicas),
``grpcs://host:port?ca=FILE&token=FILE``, query parameters ``token``, ``ca``, ``server_name``,
``deadline_ms``, ``retries``, ``backoff_ms``, ``max_message_mb`` (docs/offload.md), and ``sim://?...``,
which starts a local ``opu-serve`` on a free loopback port with those simulator parameters and
stops it when the device is closed.

Bulk data is serialised by hand around the one ``bytes`` field of each request: the small fields go
through protobuf, the payload is appended as its tag, length and bytes straight from the numpy
buffer, so the only copy between the array and the request bytes is that join (docs/python.md).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Iterable, Sequence

import grpc
import numpy as np

from . import errors
from ._proto import pb
from .errors import InvalidArgumentError, OutOfRangeError

# Room for everything but the payload in one message (shape fields, FrameInfo, framing), as the
# C++ client (offload/src/remote_device.cpp).
_MESSAGE_OVERHEAD = 1024
_DEFAULT_SERVER_LIMIT = 4 << 20  # gRPC's default, when a server does not announce its limit
_MAX_MS = 86_400_000  # a day, the longest deadline or backoff (as the C++ client)
_FLOW_WINDOW = 16 << 20  # HTTP/2 window for bulk payloads (as the C++ client)

ENCODINGS = {"ternary": pb.TERNARY, "bitplanes": pb.BITPLANES, "stochastic": pb.STOCHASTIC}
MAX_REFERENCE_REPEATS = 1024


# --- plain data ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    """opu.v1.DeviceInfo (proto/opu/v1/opu.proto documents every field)."""

    model: str = ""
    simulated: bool = False
    max_n_in: int = 0
    max_n_out: int = 0
    adc_bits: int = 8
    frametime_us: float = 0.0
    exposure_us: float = 0.0
    supports_linear: bool = False
    max_batch: int = 0
    api_version: str = "opu.v1"
    max_exposure_us: float = 0.0
    max_message_bytes: int = 0

    @classmethod
    def from_wire(cls, m) -> "DeviceInfo":
        return cls(**{f.name: getattr(m, f.name) for f in dataclasses.fields(cls)})

    def to_wire(self):
        return pb.DeviceInfo(**dataclasses.asdict(self))


@dataclasses.dataclass
class FrameInfo:
    """Device time and camera statistics of one call (opu.v1.FrameInfo)."""

    device_time_start_ns: int = 0
    device_time_end_ns: int = 0
    frames: int = 0
    saturated_pixels: int = 0
    exposure_us: float = 0.0

    @classmethod
    def from_wire(cls, m) -> "FrameInfo":
        return cls(m.device_time_start_ns, m.device_time_end_ns, m.frames, m.saturated_pixels,
                   m.exposure_us)

    @property
    def device_time_s(self) -> float:
        return (self.device_time_end_ns - self.device_time_start_ns) * 1e-9

    def merge(self, later: "FrameInfo") -> None:
        """Adds a later chunk: one span of device time, frames and saturations summed."""
        self.device_time_end_ns = later.device_time_end_ns
        self.frames += later.frames
        self.saturated_pixels += later.saturated_pixels


@dataclasses.dataclass
class Frames:
    """Camera counts, ``counts[b, p]`` (uint8 when adc_bits <= 8, else uint16), and FrameInfo."""

    counts: np.ndarray
    info: FrameInfo
    adc_bits: int


@dataclasses.dataclass
class Projections:
    """``values[b, :]`` = B v_b (float32, batch x n_out; B ~ N(0, 1)), and FrameInfo."""

    values: np.ndarray
    info: FrameInfo


@dataclasses.dataclass
class LinearOptions:
    """How vectors become binary codes and frames: the C++ ``sim::LinearOptions``, same defaults
    (the literal scheme: thresholded ternary, one frame pair per code). Fields and ranges as
    opu.v1.LinearTransformRequest."""

    encoding: str = "ternary"
    threshold: float = 0.1
    bitplanes: int = 4
    dither_seed: int = 0
    share_frames: bool = False
    repeats: int = 1
    reference_repeats: int = 0
    reference_max_age_s: float = 0.0
    exposure_us: float = 0.0

    def validate(self, where: str = "LinearTransform") -> None:
        """Raises InvalidArgumentError naming the field, the value and what is accepted (the
        server's own messages, docs/offload.md)."""
        if self.encoding not in ENCODINGS:
            raise InvalidArgumentError(f"{where}: encoding {self.encoding!r} unknown, want "
                                       "'ternary', 'bitplanes' or 'stochastic'")
        if self.encoding == "ternary":
            if not 0.0 <= self.threshold < 1.0:
                raise InvalidArgumentError(f"{where}: threshold is {self.threshold}, want a "
                                           "fraction of the sample's max |v| in [0, 1)")
        elif not (isinstance(self.bitplanes, (int, np.integer)) and 1 <= self.bitplanes <= 16):
            raise InvalidArgumentError(f"{where}: bitplanes is {self.bitplanes}, want 1..16")
        if not (isinstance(self.repeats, (int, np.integer)) and 1 <= self.repeats <= 64):
            raise InvalidArgumentError(f"{where}: repeats is {self.repeats}, want 1..64")
        if not (isinstance(self.reference_repeats, (int, np.integer))
                and 0 <= self.reference_repeats <= MAX_REFERENCE_REPEATS):
            raise InvalidArgumentError(
                f"{where}: reference_repeats is {self.reference_repeats}, want 0 (device "
                f"default) .. {MAX_REFERENCE_REPEATS}")
        if not (np.isfinite(self.reference_max_age_s) and self.reference_max_age_s >= 0):
            raise InvalidArgumentError(
                f"{where}: reference_max_age_s is {self.reference_max_age_s}, want device "
                "seconds >= 0 (0 = measure I(r) in every call)")
        if not (np.isfinite(self.exposure_us) and self.exposure_us >= 0):
            raise InvalidArgumentError(
                f"{where}: exposure_us is {self.exposure_us}, want 0 (automatic) or a positive "
                "number of microseconds")
        if not (isinstance(self.dither_seed, (int, np.integer)) and 0 <= self.dither_seed < 2**64):
            raise InvalidArgumentError(f"{where}: dither_seed is {self.dither_seed}, want an "
                                       "integer in [0, 2^64)")

    def to_wire(self, message) -> None:
        message.encoding = ENCODINGS[self.encoding]
        message.threshold = self.threshold
        message.bitplanes = self.bitplanes
        message.dither_seed = self.dither_seed
        message.share_frames = self.share_frames
        message.repeats = self.repeats
        message.reference_repeats = self.reference_repeats
        message.reference_max_age_s = self.reference_max_age_s
        message.exposure_us = self.exposure_us


def recommended_linear_options(dither_seed: int = 0) -> LinearOptions:
    """opu-train's default device feedback (docs/camera-gap.md): unbiased stochastic rounding to
    2 bit-planes per sign, identical codes measured once, each code's frames averaged 4 times and
    the reference 256 times per call."""
    return LinearOptions(encoding="stochastic", bitplanes=2, share_frames=True, repeats=4,
                         reference_repeats=256, dither_seed=dither_seed)


# --- URIs ----------------------------------------------------------------------------------------

def parse_query(query: str, where: str) -> dict[str, str]:
    """``a=1&b=2`` as sim::parse_query: empty pairs skipped, a name given twice is an error."""
    values: dict[str, str] = {}
    for pair in query.split("&"):
        if not pair:
            continue
        name, eq, value = pair.partition("=")
        if not eq or not name:
            raise InvalidArgumentError(f"{where}: query: '{pair}' is not name=value")
        if name in values:
            raise InvalidArgumentError(f"{where}: query: '{name}' is given twice "
                                       f"('{values[name]}' and '{value}'), want each parameter once")
        values[name] = value
    return values


def split_host_port(address: str, allow_port_zero: bool = False) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets), with the C++ split_host_port's messages."""
    host, colon, port = address.rpartition(":")
    if not colon:
        raise InvalidArgumentError(f"address '{address}' has no port, want HOST:PORT")
    if not host:
        raise InvalidArgumentError(f"address '{address}' has an empty host")
    if host.startswith("[") and not host.endswith("]"):
        raise InvalidArgumentError(f"address '{address}' has an unclosed '[' in its IPv6 host")
    if not host.startswith("[") and ":" in host:
        raise InvalidArgumentError(
            f"address '{address}' has an IPv6 host without brackets, want [ADDR]:PORT")
    low = 0 if allow_port_zero else 1
    if not port.isdigit() or not low <= int(port) <= 65535:
        raise InvalidArgumentError(f"address '{address}': port '{port}' is not a number in "
                                   f"{low}..65535")
    return host, int(port)


@dataclasses.dataclass
class RemoteOptions:
    """What a grpc:// or grpcs:// URI says (defaults as the C++ RemoteOptions)."""

    addresses: list[str]
    tls: bool = False
    token: str = ""
    ca_pem: bytes | None = None
    server_name: str = ""
    deadline_s: float = 60.0
    retries: int = 8
    backoff_s: float = 0.05
    max_backoff_s: float = 1.0
    max_message_bytes: int = 64 << 20

    @property
    def description(self) -> str:
        return ("grpcs://" if self.tls else "grpc://") + ",".join(self.addresses)


def _positive_integer(uri: str, name: str, value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise InvalidArgumentError(f"open_device: parameter {name}='{value}' in '{uri}' is not a "
                                   "positive integer")
    return int(value)


def _bounded_integer(uri: str, name: str, value: str, most: int, meaning: str) -> int:
    n = _positive_integer(uri, name, value)
    if n > most:
        raise InvalidArgumentError(f"open_device: parameter {name}='{value}' in '{uri}' is above "
                                   f"{most} ({meaning})")
    return n


def _milliseconds(uri: str, name: str, value: str) -> float:
    return _bounded_integer(uri, name, value, _MAX_MS, "a day") / 1000.0


def _read_file(path: str, what: str, param: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise errors.NotFoundError(f"open_device: {param}=: {what} '{path}' not found") from None
    except OSError as e:
        raise errors.NotFoundError(f"open_device: {param}=: cannot read {what} '{path}': "
                                   f"{e.strerror}") from None


def remote_options_from_uri(uri: str) -> RemoteOptions:
    if uri.startswith("grpc://"):
        rest, tls = uri[7:], False
    elif uri.startswith("grpcs://"):
        rest, tls = uri[8:], True
    else:
        raise InvalidArgumentError(f"open_device: '{uri}' is not a grpc:// or grpcs:// URI")
    hosts, _, query = rest.partition("?")
    if hosts.endswith("/"):
        hosts = hosts[:-1]
    if not hosts:
        raise InvalidArgumentError(f"open_device: '{uri}' names no server, want "
                                   f"{'grpcs' if tls else 'grpc'}://HOST:PORT[,HOST:PORT...]")
    if "/" in hosts:
        raise InvalidArgumentError(f"open_device: '{uri}' has a path; want only HOST:PORT[,...] "
                                   "and an optional ?query")
    options = RemoteOptions(addresses=[], tls=tls)
    for address in hosts.split(","):
        try:
            split_host_port(address)
        except InvalidArgumentError as e:
            raise InvalidArgumentError(f"open_device: '{uri}': {e.message}") from None
        options.addresses.append(address)
    for name, value in parse_query(query, f"open_device: query of '{uri}'").items():
        if name == "token":
            token = _read_file(value, "token file", "token").decode().strip()
            if not token:
                raise InvalidArgumentError(f"open_device: token file '{value}' is empty")
            options.token = token
        elif name == "ca":
            if not tls:
                raise InvalidArgumentError(f"open_device: ca= in '{uri}' needs grpcs://, not "
                                           "grpc://")
            options.ca_pem = _read_file(value, "CA certificate", "ca")
        elif name == "server_name":
            options.server_name = value
        elif name == "deadline_ms":
            options.deadline_s = _milliseconds(uri, name, value)
        elif name == "retries":
            options.retries = _bounded_integer(uri, name, value, 1000, "attempts per call")
        elif name == "backoff_ms":
            options.backoff_s = _milliseconds(uri, name, value)
            options.max_backoff_s = max(options.max_backoff_s, options.backoff_s)
        elif name == "max_message_mb":
            options.max_message_bytes = _bounded_integer(
                uri, name, value, 2047, "gRPC's message limit is an int") << 20
        else:
            raise InvalidArgumentError(
                f"open_device: unknown parameter '{name}' in '{uri}', want token, ca, server_name,"
                " deadline_ms, retries, backoff_ms or max_message_mb")
    return options


def _channel_target(addresses: Sequence[str]) -> str:
    """One address: itself (gRPC's DNS resolver). A list: a static ipv4:/ipv6: target of IP
    literals, resolved once now (round_robin needs one entry per server)."""
    if len(addresses) == 1:
        return addresses[0]
    family, literals = None, []
    for address in addresses:
        host, port = split_host_port(address)
        if host.startswith("["):
            fam, literal = socket.AF_INET6, f"{host}:{port}"
        else:
            try:
                found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
            except socket.gaierror as e:
                raise errors.UnavailableError(f"cannot resolve host '{host}': {e}") from None
            v4 = [a for a in found if a[0] == socket.AF_INET]
            pick = v4[0] if v4 else found[0]
            fam = pick[0]
            literal = (f"{pick[4][0]}:{port}" if fam == socket.AF_INET
                       else f"[{pick[4][0]}]:{port}")
        if family is not None and fam != family:
            raise InvalidArgumentError("address list mixes IPv4 and IPv6 hosts; use one family")
        family = fam
        literals.append(literal)
    return ("ipv4:" if family == socket.AF_INET else "ipv6:") + ",".join(literals)


# --- hand serialisation of the bulk field --------------------------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _with_bytes_field(head: bytes, field: int, payload) -> bytes:
    """``head`` (a serialised message without the field) + field ``field`` = ``payload``. Protobuf
    accepts fields in any order, so this is the message with the field set; ``payload`` (any
    buffer: a numpy array's memoryview) is copied once, by the join."""
    view = memoryview(payload).cast("B")
    return b"".join((head, _varint((field << 3) | 2), _varint(view.nbytes), view))


def _identity(b: bytes) -> bytes:
    return b


# --- the device ----------------------------------------------------------------------------------

class RemoteDevice:
    """A device behind opu.v1 (opu-serve, a real device, the Python adapter). Thread-safe."""

    def __init__(self, options: RemoteOptions):
        self.options = options
        self.description = options.description
        if options.max_message_bytes < 4096:
            raise InvalidArgumentError(f"{self.description}: max_message_bytes is "
                                       f"{options.max_message_bytes}, want >= 4096")
        target = _channel_target(options.addresses)
        args = [
            ("grpc.max_send_message_length", options.max_message_bytes),
            ("grpc.max_receive_message_length", options.max_message_bytes),
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.initial_reconnect_backoff_ms", max(1, int(options.backoff_s * 1000))),
            ("grpc.max_reconnect_backoff_ms", max(1, int(options.max_backoff_s * 1000))),
            ("grpc.http2.lookahead_bytes", _FLOW_WINDOW),
            ("grpc.http2.max_frame_size", (1 << 24) - 1),
        ]
        if len(options.addresses) > 1:
            args.append(("grpc.service_config",
                         '{"loadBalancingConfig":[{"round_robin":{}}]}'))
        if options.tls:
            name = options.server_name or split_host_port(options.addresses[0])[0]
            if name and not name.startswith("["):
                args.append(("grpc.ssl_target_name_override", name))
            credentials = grpc.ssl_channel_credentials(root_certificates=options.ca_pem)
            self._channel = grpc.secure_channel(target, credentials, options=args)
        else:
            self._channel = grpc.insecure_channel(target, options=args)
        # The token travels as metadata on every call, over grpc:// too (as the C++ client).
        self._metadata = ((("authorization", f"Bearer {options.token}"),) if options.token
                          else None)
        ch = self._channel
        self._get_info = ch.unary_unary("/opu.v1.OpuDevice/GetInfo",
                                        request_serializer=pb.GetInfoRequest.SerializeToString,
                                        response_deserializer=pb.DeviceInfo.FromString)
        self._transform = ch.unary_unary("/opu.v1.OpuDevice/Transform",
                                         request_serializer=_identity,
                                         response_deserializer=pb.TransformResponse.FromString)
        self._stream = ch.stream_stream("/opu.v1.OpuDevice/TransformStream",
                                        request_serializer=_identity,
                                        response_deserializer=pb.TransformResponse.FromString)
        self._linear = ch.unary_unary("/opu.v1.OpuDevice/LinearTransform",
                                      request_serializer=_identity,
                                      response_deserializer=pb.LinearTransformResponse.FromString)
        # Ids start at a clock-dependent point so that several clients' ids rarely meet in logs.
        self._ids = itertools.count((time.monotonic_ns() & 0xFFFFFFFF) << 20)
        self.stats = {"rpcs": 0, "retries": 0, "chunked_calls": 0}
        self._closed = False
        try:
            wire = self._call("GetInfo", lambda t: self._get_info(
                pb.GetInfoRequest(), timeout=t, metadata=self._metadata))
        except errors.OpuError as e:
            self.close()
            raise errors.error(e.code, f"connecting to {self.description}: {e.message}") from None
        self._info = DeviceInfo.from_wire(wire)
        server_limit = wire.max_message_bytes or _DEFAULT_SERVER_LIMIT
        self.message_limit = min(server_limit, options.max_message_bytes)

    # -- plumbing --

    def _call(self, rpc: str, attempt, messages: int = 1):
        """``attempt(timeout)`` until it succeeds, fails with anything but UNAVAILABLE, or the
        retries run out; exponential backoff between attempts, waiting for the channel to be
        ready (which also drives its reconnection)."""
        if self._closed:
            raise errors.FailedPreconditionError(f"{rpc} on {self.description}: device is closed")
        backoff = self.options.backoff_s
        attempts = max(1, self.options.retries)
        for k in itertools.count(1):
            self.stats["rpcs"] += 1
            try:
                return attempt(self.options.deadline_s * max(1, messages))
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    raise errors.from_rpc_error(e) from None
                if k >= attempts:
                    raise errors.from_rpc_error(
                        e, f"{rpc} on {self.description}: unavailable after {k} attempts") from None
            self.stats["retries"] += 1
            ready = grpc.channel_ready_future(self._channel)
            try:
                ready.result(timeout=backoff)
            except grpc.FutureTimeoutError:
                pass
            finally:
                ready.cancel()  # stops its polling thread (which would fail once closed)
            backoff = min(self.options.max_backoff_s, backoff * 2)
        raise AssertionError("unreachable")

    def _chunk(self, in_bytes: int, out_bytes: int) -> int:
        """Largest batch whose request and response each fit one message and max_batch."""
        per_sample = max(1, in_bytes, out_bytes)
        batch = max(1, (self.message_limit - _MESSAGE_OVERHEAD) // per_sample)
        if self._info.max_batch > 0:
            batch = min(batch, self._info.max_batch)
        return batch

    # -- the device --

    def info(self) -> DeviceInfo:
        return self._info

    def _check_sizes(self, call: str, n_in: int, n_out: int, batch: int) -> None:
        info = self._info
        if n_in < 1:
            raise InvalidArgumentError(f"{call}: n_in is {n_in}, want >= 1")
        if n_in > info.max_n_in:
            raise OutOfRangeError(f"{call}: n_in {n_in} above device max_n_in {info.max_n_in}")
        if not isinstance(n_out, (int, np.integer)) or n_out < 1:
            raise InvalidArgumentError(f"{call}: n_out is {n_out}, want an integer >= 1")
        if n_out > info.max_n_out:
            raise OutOfRangeError(f"{call}: n_out {n_out} above device max_n_out "
                                  f"{info.max_n_out}")
        if batch < 1:
            raise InvalidArgumentError(f"{call}: batch is {batch}, want >= 1")

    def _check_exposure(self, call: str, exposure_us: float, zero_means: str) -> None:
        if not (np.isfinite(exposure_us) and exposure_us >= 0):
            raise InvalidArgumentError(f"{call}: exposure_us is {exposure_us}, want 0 "
                                       f"({zero_means}) or a positive number of microseconds")
        if self._info.max_exposure_us > 0 and exposure_us > self._info.max_exposure_us:
            raise OutOfRangeError(f"{call}: exposure_us {exposure_us} above device "
                                  f"max_exposure_us {self._info.max_exposure_us}")

    def pack_frames(self, frames) -> tuple[np.ndarray, int]:
        """(batch, n_in) bool or 0/1 uint8 frames -> (batch, ceil(n_in/8)) packed bytes, n_in."""
        a = np.asarray(frames)
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2:
            raise InvalidArgumentError(f"transform: frames has shape {a.shape}, want (batch, n_in)"
                                       " or (n_in,)")
        if a.dtype != np.bool_:
            if a.dtype != np.uint8:
                raise InvalidArgumentError(f"transform: frames has dtype {a.dtype}, want bool or "
                                           "uint8 holding 0 or 1")
            if a.size and a.max() > 1:
                where = np.unravel_index(int(np.argmax(a > 1)), a.shape)
                raise InvalidArgumentError(
                    f"transform: frames[{where[0]}, {where[1]}] is {a[where]}, want 0 or 1 "
                    "(bool or uint8 frames; packed frames go with packed=True)")
        return np.packbits(a, axis=-1, bitorder="little"), a.shape[1]

    def transform(self, frames, n_out: int | None = None, exposure_us: float = 0.0,
                  packed: bool = False, n_in: int | None = None) -> Frames:
        """Binary frames through the medium and the camera: ``frames`` is (batch, n_in) bool or
        0/1 uint8 (or, with ``packed=True``, (batch, ceil(n_in/8)) bytes packed LSB first as
        opu.proto says, with ``n_in`` given). Returns Frames: counts (batch, n_out), FrameInfo.
        Batches above max_batch or one message are split (over TransformStream)."""
        if packed:
            bits = np.ascontiguousarray(frames, dtype=np.uint8)
            if bits.ndim != 2:
                raise InvalidArgumentError(f"transform: packed frames have shape {bits.shape}, "
                                           "want (batch, ceil(n_in/8))")
            if n_in is None or not 1 <= n_in or bits.shape[1] != (n_in + 7) // 8:
                raise InvalidArgumentError(
                    f"transform: packed frames have {bits.shape[1]} bytes per frame and n_in is "
                    f"{n_in}, want n_in given with ceil(n_in/8) = bytes per frame")
        else:
            bits, n_in = self.pack_frames(frames)
            if n_in is None:
                raise AssertionError
        batch = bits.shape[0]
        n_out = self._info.max_n_out if n_out is None else n_out
        self._check_sizes("Transform", n_in, n_out, batch)
        self._check_exposure("Transform", exposure_us, "device default")
        pixel = 1 if self._info.adc_bits <= 8 else 2
        chunk = self._chunk(bits.shape[1], n_out * pixel)
        messages, heads = [], []
        for first in range(0, batch, chunk):
            part = bits[first:first + chunk]
            head = pb.TransformRequest(n_in=n_in, n_out=n_out, batch=part.shape[0],
                                       exposure_us=exposure_us, request_id=next(self._ids))
            heads.append(head)
            messages.append(_with_bytes_field(head.SerializeToString(), 4, part))
        if len(messages) == 1:
            responses = [self._call("Transform", lambda t: self._transform(
                messages[0], timeout=t, metadata=self._metadata))]
        else:
            self.stats["chunked_calls"] += 1
            responses = self._transform_stream(messages)
        parts, info = [], None
        for head, response in zip(heads, responses):
            bits_per = response.adc_bits or self._info.adc_bits
            want = head.batch * n_out * (1 if bits_per <= 8 else 2)
            if (response.request_id != head.request_id or response.batch != head.batch
                    or response.n_out != n_out or len(response.frames) != want):
                raise errors.DataLossError(
                    f"Transform on {self.description}: response (id {response.request_id}, batch "
                    f"{response.batch}, {len(response.frames)} bytes) does not answer request (id "
                    f"{head.request_id}, batch {head.batch}, want {want} bytes)")
            dtype = np.uint8 if bits_per <= 8 else np.dtype("<u2")
            parts.append(np.frombuffer(response.frames, dtype=dtype).reshape(head.batch, n_out))
            chunk_info = FrameInfo.from_wire(response.info)
            if info is None:
                info = chunk_info
            else:
                info.merge(chunk_info)
        counts = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return Frames(counts=counts, info=info, adc_bits=responses[0].adc_bits or
                      self._info.adc_bits)

    def _transform_stream(self, messages: list[bytes]) -> list:
        """Messages over one TransformStream, answers in order; on UNAVAILABLE, resumed after the
        last answered message."""
        answers: list = []

        def attempt(timeout):
            call = self._stream(iter(messages[len(answers):]), timeout=timeout,
                                metadata=self._metadata)
            for response in call:
                answers.append(response)
            if len(answers) != len(messages):
                raise errors.DataLossError(f"TransformStream on {self.description}: "
                                           f"{len(answers)} responses to {len(messages)} requests")
            return answers

        return self._call("TransformStream", attempt, messages=len(messages))

    def linear_transform(self, values, n_out: int | None = None,
                         options: LinearOptions | None = None, **option_fields) -> Projections:
        """Real vectors to B·v by holography: ``values`` (batch, n_in) or (n_in,) float (numpy,
        or anything ``np.asarray`` takes: a CPU torch tensor). Options as ``LinearOptions``,
        either an object or its fields by name (``encoding='stochastic', bitplanes=2``).
        Returns Projections: values (batch, n_out) float32 (or (n_out,) for one vector)."""
        if options is None:
            try:
                options = LinearOptions(**option_fields)
            except TypeError:
                known = ", ".join(f.name for f in dataclasses.fields(LinearOptions))
                unknown = sorted(set(option_fields) - {f.name for f in
                                                       dataclasses.fields(LinearOptions)})
                raise InvalidArgumentError(f"linear_transform: unknown option(s) "
                                           f"{', '.join(unknown)}, want {known}") from None
        elif option_fields:
            options = dataclasses.replace(options, **option_fields)
        options.validate()
        v = np.asarray(values)
        single = v.ndim == 1
        if single:
            v = v[None, :]
        if v.ndim != 2:
            raise InvalidArgumentError(f"LinearTransform: values has shape {v.shape}, want "
                                       "(batch, n_in) or (n_in,)")
        if not np.issubdtype(v.dtype, np.floating) and not np.issubdtype(v.dtype, np.integer):
            raise InvalidArgumentError(f"LinearTransform: values has dtype {v.dtype}, want a "
                                       "real number type")
        v = np.ascontiguousarray(v, dtype="<f4")
        batch, n_in = v.shape
        n_out = self._info.max_n_out if n_out is None else n_out
        self._check_sizes("LinearTransform", n_in, n_out, batch)
        self._check_exposure("LinearTransform", options.exposure_us, "automatic")
        bad = ~np.isfinite(v)
        if bad.any():
            i = int(np.argmax(bad.ravel()))
            raise InvalidArgumentError(
                f"LinearTransform: values[{i}] (sample {i // n_in}, feature {i % n_in}) is "
                f"{v.ravel()[i]}, want a finite number")
        chunk = self._chunk(4 * n_in, 4 * n_out)
        out, info = [], None
        for first in range(0, batch, chunk):
            part = v[first:first + chunk]
            head = pb.LinearTransformRequest(n_in=n_in, n_out=n_out, batch=part.shape[0],
                                             request_id=next(self._ids))
            options.to_wire(head)
            message = _with_bytes_field(head.SerializeToString(), 4, part)
            response = self._call("LinearTransform", lambda t: self._linear(
                message, timeout=t, metadata=self._metadata))
            want = 4 * head.batch * n_out
            if (response.request_id != head.request_id or response.batch != head.batch
                    or response.n_out != n_out or len(response.projections) != want):
                raise errors.DataLossError(
                    f"LinearTransform on {self.description}: response (id {response.request_id}, "
                    f"batch {response.batch}, {len(response.projections)} bytes) does not answer "
                    f"request (id {head.request_id}, batch {head.batch}, want {want} bytes)")
            out.append(np.frombuffer(response.projections, dtype="<f4").reshape(head.batch, n_out))
            chunk_info = FrameInfo.from_wire(response.info)
            if info is None:
                info = chunk_info
            else:
                info.merge(chunk_info)
        if len(out) > 1:
            self.stats["chunked_calls"] += 1
        projections = out[0] if len(out) == 1 else np.concatenate(out)
        return Projections(values=projections[0] if single else projections, info=info)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            # A retry's wait for the channel (channel_ready_future) leaves grpcio's connectivity
            # polling thread running for up to 0.2 s after it is cancelled; closing the channel
            # under it makes that thread fail (grpcio 1.51, _channel._poll_connectivity). Let it
            # finish first: a bounded wait, only after retries.
            state = getattr(self._channel, "_connectivity_state", None)
            end = time.monotonic() + 1.0
            while getattr(state, "polling", False) and time.monotonic() < end:
                time.sleep(0.01)
            self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"<RemoteDevice {self.description} {self._info.model!r}>"


# --- sim:// : a local opu-serve ------------------------------------------------------------------

def find_opu_serve() -> str:
    """$OPU_SERVE, else opu-serve on PATH, else the repository's build/{release,dev}/offload/."""
    env = os.environ.get("OPU_SERVE")
    if env:
        if not os.access(env, os.X_OK):
            raise errors.NotFoundError(f"OPU_SERVE='{env}' is not an executable file")
        return env
    found = shutil.which("opu-serve")
    if found:
        return found
    repo = Path(__file__).resolve().parent.parent.parent
    tried = []
    for preset in ("release", "dev"):
        candidate = repo / "build" / preset / "offload" / "opu-serve"
        tried.append(str(candidate))
        if os.access(candidate, os.X_OK):
            return str(candidate)
    raise errors.NotFoundError(
        "sim://: opu-serve not found (tried $OPU_SERVE, PATH, " + ", ".join(tried) +
        "); build it (cmake --preset dev && cmake --build --preset dev) or set OPU_SERVE")


class ServeProcess:
    """An opu-serve child on 127.0.0.1, port 0: started with the given arguments, its address
    read from its first line of stdout, stopped with SIGTERM (then SIGKILL) by ``stop()``, by
    garbage collection or at interpreter exit."""

    def __init__(self, args: Iterable[str], start_timeout_s: float = 60.0,
                 listen: str = "127.0.0.1:0"):
        exe = find_opu_serve()
        self._stderr = tempfile.TemporaryFile()
        cmd = [exe, "--listen", listen, *args]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._stderr)
        self._finalizer = weakref.finalize(self, _stop_process, self.proc)
        line = b""
        deadline = time.monotonic() + start_timeout_s
        fd = self.proc.stdout.fileno()
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(0.0, left))
            if not ready:
                self.stop()
                raise errors.DeadlineExceededError(
                    f"opu-serve printed no address within {start_timeout_s} s: {' '.join(cmd)}")
            data = os.read(fd, 256)
            if not data:
                break
            line += data
        if not line.endswith(b"\n"):
            code = self.proc.wait()
            self._stderr.seek(0)
            message = self._stderr.read().decode(errors="replace").strip()
            raise InvalidArgumentError(f"opu-serve exited with code {code} before serving: "
                                       f"{message}")
        self.address = line.decode().strip().splitlines()[0]

    def stop(self, timeout_s: float = 30.0) -> int | None:
        code = _stop_process(self.proc, timeout_s)
        self._finalizer.detach()
        return code


def _stop_process(proc: subprocess.Popen, timeout_s: float = 30.0) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode


class SimDevice(RemoteDevice):
    """``sim://?name=value...``: a local opu-serve with those simulator parameters (the names of
    SimConfig::from_params(), as in the C++ sim:// URIs), reached over loopback; ``close()`` stops
    it. Client parameters of grpc:// URIs are not accepted here (the simulator would refuse them
    by name)."""

    def __init__(self, uri: str, serve_args: Sequence[str] = ()):
        rest = uri[4:]
        if rest.startswith("//"):
            rest = rest[2:]
        if rest.startswith("/"):
            rest = rest[1:]
        if rest and not rest.startswith("?"):
            raise InvalidArgumentError(f"open_device: '{uri}': sim:// takes no host or path, only "
                                       "?name=value parameters")
        params = parse_query(rest[1:], f"open_device: query of '{uri}'")
        args = ["--log-level", "warn", "--summary-interval-s", "0", *serve_args]
        for name, value in params.items():
            args += ["--param", f"{name}={value}"]
        try:
            self.server = ServeProcess(args)
        except InvalidArgumentError as e:
            raise InvalidArgumentError(f"open_device: '{uri}': {e.message}") from None
        try:
            super().__init__(RemoteOptions(addresses=[self.server.address]))
        except BaseException:
            self.server.stop()
            raise
        self.description = f"{uri} (opu-serve at {self.server.address})"

    def close(self) -> None:
        super().close()
        self.server.stop()


def open_device(uri: str) -> RemoteDevice:
    """A device from a URI: ``grpc://``, ``grpcs://`` or ``sim://`` (docs/python.md)."""
    if not isinstance(uri, str):
        raise InvalidArgumentError(f"open_device: uri is {uri!r}, want a string such as "
                                   "'grpc://127.0.0.1:50051' or 'sim://?seed=7'")
    scheme = uri.partition(":")[0] if ":" in uri else ""
    if scheme == "sim":
        return SimDevice(uri)
    if scheme in ("grpc", "grpcs"):
        return RemoteDevice(remote_options_from_uri(uri))
    raise InvalidArgumentError(f"open_device: scheme '{scheme}' of '{uri}' unknown, want sim://, "
                               "grpc:// or grpcs://")
