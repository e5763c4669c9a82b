"""The torch device a computation runs on: one check shared by every verb, the Python API and the
Slicer modules, so that a device the machine lacks is refused in one line before any work starts."""

from __future__ import annotations

import torch

from ct2x.errors import CT2XError


def torch_device(requested: str | torch.device | None = None) -> torch.device:
    """The device for ``requested``: ``None`` or ``"auto"`` = ``cuda`` when torch sees a CUDA GPU,
    else ``cpu``; otherwise ``cpu``, ``cuda`` or ``cuda:N``, checked against this machine.

    Raises:
        CT2XError: the name is not a torch device, a device type CT2X does not run on (e.g. tpu,
            mps), ``cuda`` without a CUDA GPU, or ``cuda:N`` beyond the GPUs torch sees.
    """
    if requested is None or requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        raise CT2XError(f"unknown device {str(requested)!r}: use cpu, cuda or cuda:N (or auto)") from None
    if device.type not in ("cpu", "cuda"):
        raise CT2XError(f"device {str(device)!r} is not supported: CT2X runs on cpu or cuda (cuda:N)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CT2XError(f"device {str(device)!r} was requested but torch sees no CUDA GPU here: use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CT2XError(
                f"device {str(device)!r} was requested but torch sees {torch.cuda.device_count()} CUDA GPU(s): "
                f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
    return device
