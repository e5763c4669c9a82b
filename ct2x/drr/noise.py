"""Quantum (Poisson) noise of a DRR as a counter-based draw: each pixel's count is a function of the
seed, the pixel's index and its own expected count only.

Pixel ``n`` of a ``(V, H, W)`` image (``n = (v H + row) W + column``) gets the uniform number
``u = splitmix64(splitmix64(seed) XOR n)`` (53 bits, in (0, 1)) and the count ``k`` = the
Poisson(``rate``) quantile of ``u``: the smallest ``k`` with ``P(X <= k) >= u``, where
``P(X <= k) = Q(k + 1, rate)`` (the regularised upper incomplete gamma function). The draw is
exact (inverse transform sampling) and, unlike a sequential generator whose stream shifts when
one rate changes, it depends on nothing else: an image whose rates change in their last digits
(the same CT stored with a flipped direction matrix, another ray marcher) keeps its noise
pattern, pixel for pixel, except where a rate crosses one of its quantile steps.

Cost: a Cornish-Fisher first guess (the exact quantile for 96% of the pixels at rate 0.3, 99.6% at
100, more at higher rates; one count off otherwise), checked and corrected in unit steps with
``torch.special.gammaincc`` in float64: about 2 microseconds a pixel on a CPU core.
"""

from __future__ import annotations

import math
import secrets

import torch

from ct2x.errors import CT2XError

_MASK64 = (1 << 64) - 1


def _signed(value: int) -> int:
    """A 64-bit pattern as the int64 that holds it (torch has no uint64 arithmetic)."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's ``>>`` is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's output function of int64 bit patterns (multiplication wraps modulo 2^64)."""
    z = x + _GOLDEN
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    return z ^ _shift_right(z, 31)


def counter_uniforms(seed: int, count: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``count`` float64 uniform numbers in (0, 1), number ``n`` a function of ``(seed, n)`` alone."""
    key = splitmix64(torch.tensor([_signed(int(seed))], dtype=torch.int64, device=device))
    bits = splitmix64(torch.arange(count, dtype=torch.int64, device=device) ^ key)
    return (_shift_right(bits, 11).to(torch.float64) + 0.5) * 2.0**-53


def poisson_quantile(rate: torch.Tensor, u: torch.Tensor, max_steps: int = 10_000) -> torch.Tensor:
    """The Poisson(``rate``) quantile of ``u`` elementwise: the smallest integer ``k >= 0`` with
    ``P(X <= k) >= u`` (float64 tensors of one shape; returns float64 counts)."""
    rate, u = rate.to(torch.float64).flatten(), u.to(torch.float64).flatten()
    z = torch.special.ndtri(u)
    counts = torch.round(rate + torch.sqrt(rate) * z + (z * z - 1) / 6).clamp_min(0)  # Cornish-Fisher guess
    active = torch.arange(len(counts), device=counts.device)  # the pixels whose count may still move
    for _ in range(max_steps):
        k, lam, target = counts[active], rate[active], u[active]
        up = torch.special.gammaincc(k + 1, lam) < target  # P(X <= k) < u: k is too small
        down = (k > 0) & ~up & (torch.special.gammaincc(k.clamp_min(1), lam) >= target)  # P(X <= k - 1) >= u
        moving = up | down
        if not bool(moving.any()):
            return counts
        counts[active] = k + up.to(k.dtype) - down.to(k.dtype)
        active = active[moving]
    raise CT2XError(f"the Poisson noise draw did not converge in {max_steps} steps (rates up to {rate.max():g})")


def poisson_noise(rates: torch.Tensor, seed: int | None) -> torch.Tensor:
    """Poisson counts with the expected counts ``rates`` (any shape, >= 0), drawn per pixel from
    ``(seed, pixel index)`` (module docstring); ``seed=None`` draws a fresh seed. float32, on
    ``rates``' device."""
    if seed is None:
        seed = secrets.randbits(63)
    if rates.numel() and not math.isfinite(float(rates.max())):
        raise CT2XError("the expected photon counts are not finite: check the CT and the photons per pixel")
    u = counter_uniforms(seed, rates.numel(), rates.device)
    return poisson_quantile(rates.to(torch.float64).clamp_min(0).flatten(), u).to(torch.float32).view(rates.shape)
