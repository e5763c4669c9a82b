"""Image filters the imaging chain shares: Fourier-domain filtering with a physical frequency response,
separable Gaussian blurs, and the (V, H, W) / (H, W) batching of its stage functions.

Frequencies are in cycles per mm on the detector (the pixel spacing of a :class:`ct2x.geometry.CArm`
converts), so a stage's response (an MTF) is stated once, in physical units, whatever the readout.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ct2x.errors import CT2XError
from ct2x.geometry import CArm

#: A frequency response: radial frequency ``f`` (cycles/mm, any shape) -> gain (same shape).
Response = Callable[[torch.Tensor], torch.Tensor]


def fast_length(n: int) -> int:
    """The smallest length ``>= n`` whose prime factors are 2, 3 and 5 (fast FFT sizes)."""
    length = max(int(n), 1)
    while True:
        m = length
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return length
        length += 1


def batch(images: torch.Tensor, views: CArm | Sequence[CArm]) -> tuple[torch.Tensor, list[CArm], bool]:
    """``images`` ``(V, H, W)`` or ``(H, W)`` with one view each -> ``(V, H, W)`` float32, the views as a
    list, and whether the input was a single ``(H, W)`` image (to squeeze the result back)."""
    if not isinstance(images, torch.Tensor) or images.dim() not in (2, 3):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise CT2XError(f"the imaging chain takes image tensors (V, H, W) or (H, W), got {shape}")
    single = images.dim() == 2
    views, _ = view_list(views)
    images = images[None] if single else images
    if len(views) != images.shape[0]:
        raise CT2XError(f"give one ct2x.geometry.CArm view per image: {images.shape[0]} image(s), {len(views)} view(s)")
    wrong = [v.detector_shape for v in views if v.detector_shape != tuple(images.shape[-2:])]
    if wrong:
        raise CT2XError(f"the images are {tuple(images.shape[-2:])} pixels but a view's detector is {wrong[0]}")
    return images.float(), views, single


def per_view(function: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Let a stage that takes images ``(V, H, W)`` and a list of views (its first two arguments) also take
    one image ``(H, W)`` and one view, and then return ``(H, W)`` (:func:`batch` checks them)."""

    @functools.wraps(function)
    def stage(images: torch.Tensor, views: CArm | Sequence[CArm], *args: object, **kwargs: object) -> torch.Tensor:
        images, views, single = batch(images, views)
        out = function(images, views, *args, **kwargs)
        return out[0] if single else out

    return stage


def view_list(views: CArm | Sequence[CArm]) -> tuple[list[CArm], bool]:
    """``views`` as a non-empty list of :class:`CArm`, and whether a single view was given."""
    single = isinstance(views, CArm)
    views = [views] if single else list(views)
    if not views or not all(isinstance(v, CArm) for v in views):
        raise CT2XError("give one or more ct2x.geometry.CArm views")
    return views, single


def fourier_filter(image: torch.Tensor, spacing_mm: tuple[float, float], response: Response, pad: int) -> torch.Tensor:
    """Filter ``image`` ``(..., H, W)`` by the isotropic frequency ``response`` (cycles/mm): edge-replicated by
    ``pad`` pixels on every side (so that nothing wraps round), multiplied in the Fourier domain at the radial
    frequency of each coefficient, cropped back. ``spacing_mm``: (row, column) pixel spacing."""
    height, width = image.shape[-2:]
    shape = image.shape
    size = (fast_length(height + 2 * pad), fast_length(width + 2 * pad))
    extra = (pad, size[1] - width - pad, pad, size[0] - height - pad)  # left, right, top, bottom
    padded = F.pad(image.reshape(-1, 1, height, width), extra, mode="replicate")
    fy = torch.fft.fftfreq(size[0], d=spacing_mm[0], device=image.device)
    fx = torch.fft.rfftfreq(size[1], d=spacing_mm[1], device=image.device)
    radial = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    filtered = torch.fft.irfft2(torch.fft.rfft2(padded) * response(radial), s=size)
    return filtered[..., pad : pad + height, pad : pad + width].reshape(shape)


def gaussian_blur(image: torch.Tensor, sigma_px: tuple[float, float]) -> torch.Tensor:
    """Separable Gaussian blur of ``image`` ``(..., H, W)`` with standard deviations ``(rows, columns)`` in
    pixels (sampled kernels of radius ``ceil(3 sigma)``, edges replicated); ``sigma <= 0`` leaves an axis."""
    shape = image.shape
    out = image.reshape(-1, 1, *shape[-2:])
    for axis, sigma in enumerate(sigma_px):
        if sigma <= 0:
            continue
        radius = max(1, math.ceil(3.0 * sigma))
        x = torch.arange(-radius, radius + 1, dtype=out.dtype, device=out.device)
        kernel = torch.exp(-0.5 * (x / sigma) ** 2)
        kernel = kernel / kernel.sum()
        if axis == 0:
            out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
        else:
            out = F.conv2d(F.pad(out, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    return out.reshape(shape)
