"""Direct Feedback Alignment for PyTorch, with TinyDFA's API and semantics, on any device.

``DFA`` and ``DFALayer`` are used exactly as TinyDFA's (the paper's code, lightonai/
dfa-scales-to-modern-deep-learning): put a ``DFALayer`` after each hidden block whose output should
receive the projected error, and ``DFA([layers...])`` on the network's output::

    self.dfa1, self.dfa2 = DFALayer(), DFALayer()
    self.dfa = DFA([self.dfa1, self.dfa2])                      # digital: torch.mm, as TinyDFA
    self.dfa = DFA([self.dfa1, self.dfa2], device="sim://?camera=realistic&n_out=256")  # an OPU
    ...
    x = self.dfa1(torch.relu(self.fc1(x)))
    x = self.dfa2(torch.relu(self.fc2(x)))
    return self.dfa(self.fc3(x))

Semantics (TinyDFA's; docs/design.md §4): one random matrix B, output size x d_max with d_max the
largest feedback point; on backward the error e = dL/dy at ``DFA``'s input is projected **once**
per step, ``e B``, divided by sqrt(d_max) when ``normalization`` is on; feedback point l receives
the first d_l components as its gradient and backpropagation runs from it down to the previous
``DFALayer`` (which cuts the graph: no gradient crosses a ``DFALayer``). The block above the last
feedback point learns from e by ordinary backprop (``DFA`` passes e through). ``no_training=True``
sends nothing: only the top block learns (shallow). ``batch_dims`` name the dimensions that hold
samples (and, for a feedback point with more of them than the output, e.g. tokens, the projection
is repeated over the extra ones and divided by the square root of their count).

Where ``e B`` comes from is the ``device`` argument:

- ``None`` or ``"digital"``: B ~ U[-1, 1) drawn with torch on ``rp_device``, ``torch.mm``: TinyDFA;
- a URI (``sim://...``, ``grpc://...``, ``grpcs://...``) or an open ``RemoteDevice``: ``B e`` is
  the device's linear transform (holography from camera frames; B ~ N(0, 1), fixed by the
  medium), scaled by 1/sqrt(3) so that it teaches with the magnitude of TinyDFA's U[-1, 1) B, as
  the C++ trainer does (``(1/sqrt(3)) / (std(B) sqrt(d_max))``). All-zero error rows are not sent
  (B 0 = 0). ``linear_options`` default to opu-train's (``recommended_linear_options()``).

A TinyDFA script therefore changes one line to train through an OPU.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from . import errors
from .client import LinearOptions, RemoteDevice, open_device, recommended_linear_options

PAPER_STD = 1.0 / math.sqrt(3.0)  # std of U[-1, 1): the scale device projections are brought to


class FeedbackPointsHandling(Enum):
    LAST = "LAST"  # each DFALayer keeps the last tensor that went through it
    MINIBATCH = "MINIBATCH"  # TinyDFA's experimental mode: not supported here
    REDUCE = "REDUCE"  # feedback points summed into one, backward once


def _sizes(shape: Sequence[int], batch_dims: Sequence[int]) -> tuple[int, int]:
    """(product over batch dims, product over the others) of a shape."""
    batch = [d % len(shape) for d in batch_dims]
    shared = int(np.prod([s for i, s in enumerate(shape) if i in batch], dtype=np.int64))
    size = int(np.prod([s for i, s in enumerate(shape) if i not in batch], dtype=np.int64))
    return shared, size


class _Backend(torch.autograd.Function):
    @staticmethod
    def forward(ctx, output, dfa):  # noqa: D401 - the identity; the work is in backward
        ctx.dfa = dfa
        return output.view_as(output)

    @staticmethod
    def backward(ctx, grad_output):
        dfa: DFA = ctx.dfa
        if not dfa.no_training:
            dfa._send_feedback(grad_output)
        return grad_output, None


class DFA(nn.Module):
    """The output end of DFA: projects the error once and sends it to every ``DFALayer``."""

    def __init__(self, dfa_layers, normalization: bool = True, rp_device=None,
                 no_training: bool = False,
                 feedback_points_handling: FeedbackPointsHandling = FeedbackPointsHandling.LAST,
                 batch_dims: Sequence[int] = (0,), device=None,
                 linear_options: LinearOptions | None = None, seed: int | None = None):
        super().__init__()
        if feedback_points_handling == FeedbackPointsHandling.MINIBATCH:
            raise NotImplementedError(
                "DFA: feedback_points_handling MINIBATCH (TinyDFA's experimental mode) is not "
                "supported; use LAST or REDUCE")
        if not isinstance(feedback_points_handling, FeedbackPointsHandling):
            raise errors.InvalidArgumentError(
                f"DFA: feedback_points_handling is {feedback_points_handling!r}, want "
                "FeedbackPointsHandling.LAST or REDUCE")
        self.dfa_layers = list(dfa_layers)
        if not self.dfa_layers and not no_training:
            raise errors.InvalidArgumentError("DFA: dfa_layers is empty, want at least one "
                                              "DFALayer (or no_training=True)")
        for layer in self.dfa_layers:
            if not isinstance(layer, DFALayer):
                raise errors.InvalidArgumentError(f"DFA: dfa_layers holds a {type(layer).__name__}"
                                                  ", want DFALayer objects")
        self.normalization = normalization
        self.rp_device = rp_device
        self.no_training = no_training
        self.batch_dims = tuple(batch_dims)
        self.feedback_points_handling = feedback_points_handling
        self.seed = seed
        for layer in self.dfa_layers:
            layer.feedback_registrar = self._register_feedback_point
            layer.feedback_points_handling = feedback_points_handling
            if layer.batch_dims is None:
                layer.batch_dims = self.batch_dims
        # The projection's source.
        self._owns_device = False
        if device is None or device == "digital":
            self.device = None
        elif isinstance(device, str):
            self.device = open_device(device)
            self._owns_device = True
        elif isinstance(device, RemoteDevice):
            self.device = device
        else:
            raise errors.InvalidArgumentError(
                f"DFA: device is {device!r}, want None or 'digital' (torch.mm), a URI "
                "('sim://...', 'grpc://host:port') or an open RemoteDevice")
        self.linear_options = linear_options or recommended_linear_options()
        self.linear_options.validate("DFA linear_options")
        self.feedback_matrix: torch.Tensor | None = None
        self.max_feedback_size = 0
        self.output_size = 0
        self.global_feedback_point = None
        self.initialized = False
        # What the device cost so far (frames, device seconds) and the last projection sent.
        self.frames = 0
        self.device_time_s = 0.0
        self.last_projection: torch.Tensor | None = None

    def forward(self, output):
        if not (self.initialized or self.no_training):
            self._initialize(output)
        return _Backend.apply(output, self)

    def _initialize(self, output) -> None:
        if self.rp_device is None:
            self.rp_device = output.device
        self.output_size = _sizes(output.shape, self.batch_dims)[1]
        for layer in self.dfa_layers:
            if layer.feedback_shape is None:
                raise errors.FailedPreconditionError(
                    f"DFA: DFALayer {layer.name or self.dfa_layers.index(layer)} has seen no "
                    "input before the output reached DFA; call every DFALayer in forward")
            self.max_feedback_size = max(self.max_feedback_size,
                                         _sizes(layer.feedback_shape, layer.batch_dims)[1])
        if self.device is None:
            generator = None
            if self.seed is not None:
                generator = torch.Generator(device=self.rp_device).manual_seed(self.seed)
            self.feedback_matrix = (torch.rand(self.output_size, self.max_feedback_size,
                                               device=self.rp_device, generator=generator)
                                    * 2 - 1)
        else:
            info = self.device.info()
            if info.max_n_out < self.max_feedback_size:
                raise errors.OutOfRangeError(
                    f"DFA: the largest feedback point has {self.max_feedback_size} components, "
                    f"above device max_n_out {info.max_n_out} ({self.device.description})")
        self.initialized = True

    def project(self, errors_2d: torch.Tensor) -> torch.Tensor:
        """e B (batch x d_max) for a batch of errors (batch x output size), normalised as TinyDFA
        (divided by sqrt(d_max) when ``normalization``); device projections brought to U[-1, 1)'s
        scale."""
        if self.device is None:
            projection = torch.mm(errors_2d.to(self.rp_device), self.feedback_matrix)
        else:
            e = errors_2d.detach().to("cpu", torch.float32).contiguous().numpy()
            live = np.flatnonzero(np.abs(e).max(axis=1) > 0)
            out = np.zeros((e.shape[0], self.max_feedback_size), np.float32)
            if live.size:
                sent = e if live.size == e.shape[0] else e[live]
                result = self.device.linear_transform(sent, n_out=self.max_feedback_size,
                                                      options=self.linear_options)
                self.frames += result.info.frames
                self.device_time_s += result.info.device_time_s
                out[live] = result.values * np.float32(PAPER_STD)  # a writable copy
            projection = torch.from_numpy(out).to(self.rp_device)
        if self.normalization:
            projection = projection / math.sqrt(self.max_feedback_size)
        return projection

    def _send_feedback(self, grad_output: torch.Tensor) -> None:
        _, grad_size = _sizes(grad_output.shape, self.batch_dims)
        projection = self.project(grad_output.reshape(-1, grad_size))
        self.last_projection = projection
        if self.feedback_points_handling == FeedbackPointsHandling.REDUCE:
            point = self.global_feedback_point
            self.global_feedback_point = None
            if point is not None:
                point.backward(projection[:, :point.shape[1]].to(point.device))
            return
        for layer in self.dfa_layers:
            point = layer.feedback_points
            if point is None:
                continue
            shared, size = _sizes(point.shape, layer.batch_dims)
            if shared != projection.shape[0]:
                # More samples at this point than at the output (e.g. tokens): the same
                # projection for each, scaled by 1/sqrt(repeats) (TinyDFA).
                repeats = shared // projection.shape[0]
                expanded = projection.unsqueeze(1).repeat(1, repeats, 1) / math.sqrt(repeats)
                feedback = expanded[:, :, :size].reshape(point.shape)
            else:
                feedback = projection[:, :size].reshape(point.shape)
            point.backward(feedback.to(point.device))
            layer.feedback_points = None  # LAST: used once, freed

    def _register_feedback_point(self, point: torch.Tensor, batch_dims) -> None:
        _, size = _sizes(point.shape, batch_dims)
        point = point.reshape(-1, size)
        if self.rp_device is not None:
            point = point.to(self.rp_device)
        if self.global_feedback_point is None:
            self.global_feedback_point = point
            return
        width = self.global_feedback_point.shape[1]
        if width > size:
            point = nn.functional.pad(point, [0, width - size])
        elif size > width:
            self.global_feedback_point = nn.functional.pad(self.global_feedback_point,
                                                           [0, size - width])
        self.global_feedback_point = self.global_feedback_point + point

    def close(self) -> None:
        """Closes a device this DFA opened from a URI (a sim:// server stops)."""
        if self._owns_device and self.device is not None:
            self.device.close()


class DFALayer(nn.Module):
    """A feedback point: its input receives the projected error, and no gradient crosses it."""

    def __init__(self, name: str | None = None, batch_dims: Sequence[int] | None = None,
                 passthrough: bool = False):
        super().__init__()
        self.name = name
        self.batch_dims = None if batch_dims is None else tuple(batch_dims)
        self.passthrough = passthrough
        self.feedback_registrar = None
        self.feedback_points_handling = None
        self.feedback_points = None
        self.feedback_shape = None
        self.initialized = False

    def forward(self, input):
        if not self.initialized:
            self.feedback_shape = input.shape
            self.initialized = True
        if input.requires_grad:
            if self.feedback_points_handling == FeedbackPointsHandling.REDUCE:
                self.feedback_registrar(input, self.batch_dims)
            else:
                self.feedback_points = input
        if self.passthrough:  # BP through the layer (alignment measurements)
            return input
        output = input.detach()
        output.requires_grad = True
        return output
