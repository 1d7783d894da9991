"""opu_toolkit: PyTorch users' door to the OPU toolkit (docs/python.md).

- ``open_device(uri)``: a client of opu.v1 (``grpc://``, ``grpcs://``, ``sim://``);
- ``DFA``, ``DFALayer``: TinyDFA's API, with B·e digital or from any device;
- ``serve(device)``: any Python object with ``info`` and ``transform`` as an opu.v1 server.
"""

from .client import (DeviceInfo, FrameInfo, Frames, LinearOptions, Projections, RemoteDevice,
                     SimDevice, open_device, recommended_linear_options)
from .errors import (DataLossError, DeadlineExceededError, FailedPreconditionError,
                     InternalError, InvalidArgumentError, NotFoundError, OpuError,
                     OutOfRangeError, ResourceExhaustedError, UnauthenticatedError,
                     UnavailableError, UnimplementedError)

from .dfa import DFA, DFALayer, FeedbackPointsHandling  # noqa: E402 (torch: imported last)
from .alignment import AlignmentMeasurement  # noqa: E402

__all__ = [
    "DFA", "DFALayer", "FeedbackPointsHandling", "AlignmentMeasurement",
    "DeviceInfo", "FrameInfo", "Frames", "LinearOptions", "Projections", "RemoteDevice",
    "SimDevice", "open_device", "recommended_linear_options", "OpuError", "InvalidArgumentError",
    "OutOfRangeError", "NotFoundError", "FailedPreconditionError", "UnauthenticatedError",
    "ResourceExhaustedError", "UnimplementedError", "UnavailableError", "DeadlineExceededError",
    "DataLossError", "InternalError",
]
