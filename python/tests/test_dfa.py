"""DFA for PyTorch: TinyDFA's semantics, digital and through a device."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import opu_toolkit as opu
from opu_toolkit import DFA, AlignmentMeasurement, DFALayer, FeedbackPointsHandling
from opu_toolkit.dfa import PAPER_STD


class Net(nn.Module):
    """TinyDFA's MNIST example, small: in-16-8-classes, feedback after each hidden layer."""

    def __init__(self, n_in=20, classes=4, method="DFA", **dfa_args):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(n_in, 16), nn.Linear(16, 8), nn.Linear(8, classes)
        self.dfa1, self.dfa2 = DFALayer(), DFALayer()
        self.dfa = DFA([self.dfa1, self.dfa2], no_training=(method == "SHALLOW"), **dfa_args)
        self.h1 = self.h2 = None

    def forward(self, x):
        self.h1 = torch.relu(self.fc1(x))
        if self.h1.requires_grad:
            self.h1.retain_grad()
        x = self.dfa1(self.h1)
        self.h2 = torch.relu(self.fc2(x))
        if self.h2.requires_grad:
            self.h2.retain_grad()
        x = self.dfa2(self.h2)
        return self.dfa(self.fc3(x))


def data(n=256, n_in=20, classes=4, seed=0):
    """Linearly separable-ish clusters: learnable in a few dozen steps."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, n_in, generator=g) * 2
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + torch.randn(n, n_in, generator=g), y


def error_of(net, x, y):
    """e = dL/dy at DFA's input, for the same weights and batch."""
    out = net.fc3(torch.relu(net.fc2(torch.relu(net.fc1(x))))).detach().requires_grad_()
    F.cross_entropy(out, y).backward()
    return out.grad


def test_digital_feedback_is_tinydfas_projection():
    torch.manual_seed(0)
    net = Net(seed=3)
    x, y = data(32)
    F.cross_entropy(net(x), y).backward()
    e = error_of(net, x, y)
    b = net.dfa.feedback_matrix
    assert b.shape == (4, 16) and float(b.min()) >= -1 and float(b.max()) < 1  # U[-1, 1)
    want = e @ b / math.sqrt(16)  # d_max = 16
    torch.testing.assert_close(net.h1.grad, want[:, :16])
    torch.testing.assert_close(net.h2.grad, want[:, :8])


def test_feedback_through_a_device_is_the_devices_projection():
    torch.manual_seed(0)
    uri = "sim://?seed=7&n_in=256&n_out=64&camera=ideal"
    with opu.open_device(uri) as device:
        net = Net(device=device)
        x, y = data(32)
        F.cross_entropy(net(x), y).backward()
        e = error_of(net, x, y)
        # Ideal camera, no drift, stochastic draws a function of (seed, values): the same call
        # again gives the same projection, bit for bit.
        p = device.linear_transform(e.numpy(), n_out=16, options=net.dfa.linear_options)
    want = torch.from_numpy(p.values.copy()) * PAPER_STD / math.sqrt(16)
    assert torch.equal(net.h1.grad, want)
    assert torch.equal(net.h2.grad, want[:, :8])
    assert net.dfa.frames == p.info.frames > 0


def test_zero_errors_are_not_sent():
    with opu.open_device("sim://?seed=7&n_in=256&n_out=64&camera=ideal") as device:
        dfa = DFA([DFALayer()], device=device)
        dfa.max_feedback_size = 16
        errors = torch.zeros(5, 4)
        errors[2] = torch.tensor([0.1, -0.2, 0.05, 0.05])
        projection = dfa.project(errors)
        single = device.linear_transform(errors[2:3].numpy(), n_out=16, options=dfa.linear_options)
    assert projection.shape == (5, 16)
    assert torch.count_nonzero(projection[[0, 1, 3, 4]]) == 0
    torch.testing.assert_close(projection[2], torch.from_numpy(single.values[0].copy()) * PAPER_STD / 4)


def test_shallow_trains_nothing_below_the_last_feedback_point():
    torch.manual_seed(0)
    net = Net(method="SHALLOW")
    x, y = data(32)
    F.cross_entropy(net(x), y).backward()
    for p in list(net.fc1.parameters()) + list(net.fc2.parameters()):
        assert p.grad is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.fc3.parameters())


def test_the_top_block_learns_by_backprop_and_the_points_cut_the_graph():
    torch.manual_seed(0)
    net, plain = Net(), Net(method="SHALLOW")
    plain.load_state_dict(net.state_dict())
    x, y = data(32)
    F.cross_entropy(net(x), y).backward()
    F.cross_entropy(plain(x), y).backward()
    torch.testing.assert_close(net.fc3.weight.grad, plain.fc3.weight.grad)
    # fc1 learns from its own feedback only: (B_1 e) * relu'(a_1) x^T.
    e = error_of(net, x, y)
    delta = (e @ net.dfa.feedback_matrix / 4) * (net.h1 > 0)
    torch.testing.assert_close(net.fc1.weight.grad, delta.T @ x)


def train(net, steps=60, lr=0.05, seed=0):
    x, y = data(512, seed=seed)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    losses = []
    for step in range(steps):
        i = torch.arange(step * 64, step * 64 + 64) % 512
        opt.zero_grad()
        loss = F.cross_entropy(net(x[i]), y[i])
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses


def test_a_short_digital_run_learns():
    torch.manual_seed(1)
    losses = train(Net(seed=1))
    # Chance level is ln 4 = 1.39; the clusters are separable. Measured: 1.50 -> 0.00002.
    assert np.mean(losses[:5]) > 0.8 and np.mean(losses[-10:]) < 0.3, losses


@pytest.mark.slow
def test_a_short_run_through_a_realistic_device_learns():
    torch.manual_seed(1)
    net = Net(device="sim://?seed=7&n_in=256&n_out=64&camera=realistic")
    try:
        losses = train(net, steps=40)
    finally:
        net.dfa.close()
    # Same data as the digital run; camera noise costs a little. Measured: 1.45 -> 0.12.
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5]), losses
    assert net.dfa.frames > 0 and net.dfa.device_time_s > 0


def test_tokens_get_the_repeated_projection():
    """A feedback point with more batch dimensions than the output (tokens): each token gets its
    sample's projection divided by sqrt(tokens), as TinyDFA."""
    torch.manual_seed(0)
    lin, head = nn.Linear(6, 10), nn.Linear(10 * 3, 4)
    point = DFALayer(batch_dims=(0, 1))
    dfa = DFA([point])
    x = torch.randn(5, 3, 6)
    h = lin(x)
    h.retain_grad()
    out = dfa(head(point(h).reshape(5, 30)))
    out.sum().backward()
    e = torch.ones(5, 4)
    want = (e @ dfa.feedback_matrix / math.sqrt(10)).unsqueeze(1).repeat(1, 3, 1) / math.sqrt(3)
    torch.testing.assert_close(h.grad, want)


def test_reduce_mode_trains():
    # REDUCE sums the points (padded to d_max) and backpropagates once: the same gradients as
    # LAST (measured: the same losses to the last bit, 1.50 -> 0.00002).
    torch.manual_seed(1)
    losses = train(Net(feedback_points_handling=FeedbackPointsHandling.REDUCE, seed=1))
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5]), losses


def test_alignment():
    torch.manual_seed(2)
    net = Net(seed=2)
    train(net, steps=30)
    x, y = data(64, seed=5)
    angles, alignments = AlignmentMeasurement(net).measure_alignment(x, y, F.cross_entropy)
    # The top layer gets the true gradient under both: aligned exactly.
    assert alignments[net.fc3][0] == pytest.approx(1.0, abs=1e-5)
    # After training, DFA's signal at the hidden layers points the way of the gradient (the
    # "alignment" of DFA); measured 0.67 (fc1) and 0.68 (fc2), so > 0.1 safely checks the sign.
    assert alignments[net.fc2][0] > 0.1 and alignments[net.fc1][0] > 0.1, alignments
    assert all(-1 - 1e-6 <= float(a.min()) and float(a.max()) <= 1 + 1e-6
               for a in angles.values())
    assert all(p.grad is None for p in net.parameters())


def test_bad_arguments():
    with pytest.raises(opu.InvalidArgumentError, match="device is 3"):
        DFA([DFALayer()], device=3)
    with pytest.raises(opu.InvalidArgumentError, match="holds a Linear"):
        DFA([nn.Linear(2, 2)])
    with pytest.raises(NotImplementedError, match="MINIBATCH"):
        DFA([DFALayer()], feedback_points_handling=FeedbackPointsHandling.MINIBATCH)
    with pytest.raises(opu.InvalidArgumentError, match="repeats is 0"):
        DFA([DFALayer()], linear_options=opu.LinearOptions(repeats=0))
    with opu.open_device("sim://?seed=7&n_in=256&n_out=8&camera=ideal") as device:
        net = Net(device=device)
        with pytest.raises(opu.OutOfRangeError,
                           match="feedback point has 16 components, above device max_n_out 8"):
            net(torch.randn(2, 20))
