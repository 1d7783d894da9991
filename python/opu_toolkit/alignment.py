"""Alignment between DFA's teaching signal and backpropagation's gradient, as TinyDFA measures it.

``AlignmentMeasurement(model, bp_device)`` keeps a copy of the model in which DFA is switched off
(``no_training``, every ``DFALayer`` a passthrough: plain backprop); ``measure_alignment(input,
target, loss_function)`` loads the DFA model's weights into it, runs both on the same batch, and
for every leaf module (``DFALayer`` excepted) compares the gradient reaching the module's output:
per sample, the cosine between the DFA and the BP gradient. It returns ``(angles, alignments)``:
per module the tensor of per-sample cosines, and ``[mean, std]``. Gradients of magnitude at most
``sensitivity`` count as 0, and a sample whose two gradients both vanish counts as aligned (1), as
TinyDFA. Parameter gradients the measurement leaves behind are zeroed: call it between steps.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from .dfa import DFA, DFALayer


class AlignmentMeasurement:
    def __init__(self, model: nn.Module, bp_device=None, sensitivity: float = 1e-8,
                 bp_model: nn.Module | None = None):
        self.dfa_model = model
        self.bp_device = bp_device if bp_device is not None else next(model.parameters()).device
        if bp_model is None:
            bp_model = _copy_without_device(model)
        self.bp_model = bp_model.to(self.bp_device)
        for module in self.bp_model.modules():
            if isinstance(module, DFA):
                module.no_training = True
                for layer in module.dfa_layers:
                    layer.passthrough = True
        self.sensitivity = sensitivity
        self.cosine = nn.CosineSimilarity(dim=1, eps=sensitivity)

    @staticmethod
    def _leaves(model: nn.Module):
        return [m for m in model.modules()
                if len(list(m.children())) == 0 and not isinstance(m, (DFALayer, DFA))]

    @staticmethod
    def _capture(modules, store: dict):
        def hook(module, _inputs, output):
            if isinstance(output, torch.Tensor) and output.requires_grad:
                output.register_hook(lambda g, m=module: store.__setitem__(m, g.detach()))
        return [m.register_forward_hook(hook) for m in modules]

    def measure_alignment(self, input, target, loss_function):
        self.bp_model.load_state_dict(self.dfa_model.state_dict())
        dfa_leaves, bp_leaves = self._leaves(self.dfa_model), self._leaves(self.bp_model)
        dfa_grads, bp_grads = {}, {}
        handles = self._capture(dfa_leaves, dfa_grads) + self._capture(bp_leaves, bp_grads)
        try:
            loss_function(self.dfa_model(input), target).backward()
            loss_function(self.bp_model(input.to(self.bp_device)),
                          target.to(self.bp_device)).backward()
        finally:
            for handle in handles:
                handle.remove()
        for model in (self.dfa_model, self.bp_model):
            for p in model.parameters():
                p.grad = None
        angles, alignments = {}, {}
        for dfa_module, bp_module in zip(dfa_leaves, bp_leaves):
            if dfa_module not in dfa_grads or bp_module not in bp_grads:
                continue  # received no gradient (e.g. below the last point under no_training)
            g_dfa = dfa_grads[dfa_module].clone()
            g_bp = bp_grads[bp_module].clone().to(g_dfa.device)
            g_dfa[g_dfa.abs() <= self.sensitivity] = 0
            g_bp[g_bp.abs() <= self.sensitivity] = 0
            g_dfa = g_dfa.reshape(g_dfa.shape[0], -1) / self.sensitivity
            g_bp = g_bp.reshape(g_bp.shape[0], -1) / self.sensitivity
            angle = self.cosine(g_bp, g_dfa)
            angle[(g_dfa.abs().sum(dim=1) + g_bp.abs().sum(dim=1)) == 0] = 1.0
            angles[dfa_module] = angle
            alignments[dfa_module] = [float(angle.mean()), float(angle.std())]
        return angles, alignments


def _copy_without_device(model: nn.Module) -> nn.Module:
    """A deep copy that shares, rather than copies, any DFA's device connection (a channel or a
    sim:// server cannot be deep-copied; the BP copy never uses it), and leaves out tensors kept
    from the last forward pass (feedback points, activations a model stores): they are not graph
    leaves, which deepcopy refuses, and the copy makes its own."""
    memo = {}
    for module in model.modules():
        if isinstance(module, DFA) and module.device is not None:
            memo[id(module.device)] = module.device
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = None
    return copy.deepcopy(model, memo)
