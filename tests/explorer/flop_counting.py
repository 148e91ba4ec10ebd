"""FlopCounterMode with one correction: the weight gradient of a grouped convolution.

torch's formula for `convolution_backward` counts the weight gradient as a full (ungrouped)
convolution, `groups` times too many for a grouped one: for Gated DeltaNet's depthwise
convolution that is conv_dim times the real work. The weight gradient of a convolution costs
what its forward costs, which `conv_flop_count` gives with the grouped weight shape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.ops import aten
from torch.utils.flop_counter import FlopCounterMode, conv_backward_flop, conv_flop_count


def _conv_backward_flop(
    grad_out_shape: list[int],
    x_shape: list[int],
    w_shape: list[int],
    *args: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    transposed, groups, output_mask = args[4], args[6], args[7]
    if transposed or groups == 1:
        return conv_backward_flop(
            grad_out_shape, x_shape, w_shape, *args, out_shape=out_shape, **kwargs
        )
    flops = 0
    if output_mask[0]:  # grad input: torch's formula already honours the grouped weight
        flops += conv_flop_count(grad_out_shape, w_shape, list(out_shape[0]), True)
    if output_mask[1]:
        flops += conv_flop_count(x_shape, w_shape, grad_out_shape)
    return flops


def counted(fn: Callable[[], object]) -> int:
    """Matrix (and convolution) FLOPs `fn` executes."""
    with FlopCounterMode(
        display=False, custom_mapping={aten.convolution_backward: _conv_backward_flop}
    ) as counter:
        fn()
    return counter.get_total_flops()
