"""Model size and cost: parameter counts and multiply-accumulates (MACs).

MACs are counted with forward hooks on convolutions and linear layers: for each output element
one multiply-accumulate per weight that feeds it (bias, norms, activations and pooling are not
counted). The count covers the whole batch of ``input_shape``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from onedge.errors import ConfigError


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter elements (buffers such as BN running stats excluded)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def count_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Conv and linear multiply-accumulates of one eval-mode forward pass on zeros."""
    if not input_shape or any(not isinstance(d, int) or d < 1 for d in input_shape):
        raise ConfigError(f"input_shape must be positive integers, got {input_shape!r}")
    total = 0

    def count(layer: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.Linear):
            total += output.numel() * layer.in_features
        else:  # weight (out, in / groups, *kernel): each output element reads one slice
            total += output.numel() * math.prod(layer.weight.shape[1:])

    layers = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    hooks = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, layers)]
    first = next(module.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(input_shape, device=device))
    finally:
        for hook in hooks:
            hook.remove()
        module.train(was_training)
    return total
