"""Input checks shared by the public functions: each raises a ValueError naming the parameter and the fix."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

SUPPORTED_DTYPES = (torch.float32, torch.float64)


def check_sigma(sigma, name: str = "sigma") -> float | Tensor:
    """sigma: a finite number >= 0, or a 0-dim floating tensor (which may require grad). Returned unchanged."""
    if isinstance(sigma, Tensor):
        if sigma.dim() != 0 or not sigma.is_floating_point():
            raise ValueError(
                f"{name} must be a float or a 0-dim floating-point tensor, got a {sigma.dtype} tensor of shape "
                f"{tuple(sigma.shape)}"
            )
        value = float(sigma.detach())
    elif isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
        value = float(sigma)
    else:
        raise ValueError(f"{name} must be a float or a 0-dim tensor, got {type(sigma).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (the noise standard deviation), got {value}")
    return sigma


def check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_input(model: nn.Module, x) -> None:
    """x must be a finite float32/float64 batch shaped for the model, on the model's device and dtype."""
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in SUPPORTED_DTYPES:
        raise ValueError(
            f"x has dtype {x.dtype}; noiselab's closed forms run in float32 or float64 "
            "(half precision loses the small variances): convert with x.float() and model.float()"
        )
    parameter = next(model.parameters(), None)
    if parameter is not None:
        if parameter.device != x.device:
            raise ValueError(f"x is on {x.device} but the model is on {parameter.device}: move one with .to()")
        if parameter.dtype != x.dtype:
            raise ValueError(
                f"x has dtype {x.dtype} but the model's parameters are {parameter.dtype}: convert one of them"
            )
    expected = getattr(model, "input_shape", None)
    if expected is not None and (x.dim() != len(expected) + 1 or tuple(x.shape[1:]) != tuple(expected)):
        hint = " (add a batch dimension with x.unsqueeze(0))" if tuple(x.shape) == tuple(expected) else ""
        raise ValueError(
            f"x must have shape (batch, {', '.join(map(str, expected))}) for {type(model).__name__}, "
            f"got {tuple(x.shape)}{hint}"
        )
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
    if isinstance(first, nn.Conv2d) and (x.dim() != 4 or x.shape[1] != first.in_channels):
        raise ValueError(
            f"x must have shape (batch, {first.in_channels}, height, width) for this model's first "
            f"convolution, got {tuple(x.shape)}"
        )
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or infinite values")


def check_target(target, batch: int, classes: int) -> None:
    if not isinstance(target, Tensor) or target.dtype not in (torch.int64, torch.int32, torch.uint8):
        kind = getattr(target, "dtype", type(target).__name__)
        raise ValueError(f"target must be an integer tensor of class indices, got {kind}")
    if target.shape != (batch,):
        raise ValueError(f"target must have shape ({batch},), one class index per example, got {tuple(target.shape)}")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= classes):
        raise ValueError(
            f"target holds class indices from {int(target.min())} to {int(target.max())}; "
            f"they must lie in [0, {classes - 1}] for {classes} outputs"
        )
