"""Public DRR API: polyenergetic DRRs (DeepDRR's physical model), line integrals and MIPs.

All functions take a :class:`ct2x.volume.CTVolume` in HU (LPS placement) and a list of
:class:`ct2x.geometry.CArm` views sharing one detector shape, and return a float32 tensor
``(V, H, W)`` in image order (row ``v`` down, column ``u`` right; see ``ct2x.geometry``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ct2x.device import torch_device
from ct2x.drr import deepdrr_backend
from ct2x.drr.materials import MATERIALS, attenuation_table, hu_to_density, hu_to_material_index
from ct2x.drr.noise import poisson_noise
from ct2x.drr.projector import DEFAULT_MEMORY_BYTES, MARCHERS, Marcher, numba_threads, project, resolve_backend
from ct2x.drr.spectrum import get_spectrum
from ct2x.errors import CT2XError, positive_finite
from ct2x.geometry import CArm
from ct2x.memory import check_memory as _check_memory
from ct2x.volume import CTVolume

Backend = Literal["numba", "torch", "deepdrr", "auto"]
#: DRR backends: the two ray marchers, DeepDRR itself, and ``"auto"``.
BACKENDS = ("numba", "torch", "deepdrr", "auto")
_MM_PER_CM = 10.0


#: Working memory of :func:`render_drr` (measured peaks, rounded up): per ray (its float64 geometry in
#: ``ray_samples``), per pixel and energy of the spectral sum's chunk (float32, twice), per CT voxel
#: by ray marcher (numba: the 5-byte material cells, the labels once more while their cells' bits are set,
#: and a float32 copy; torch: HU, density, material index and the per-material atlas), plus the torch
#: marcher's chunk of samples (``memory_bytes``).
BYTES_PER_RAY = 200
BYTES_PER_PIXEL_ENERGY = 8
BYTES_PER_VOXEL = {"numba": 10, "torch": 36}
#: Pixels of a view whose spectral sum :func:`transmitted_fraction` takes at once: their ``(energies,
#: pixels)`` exponentials, a few MB, stay in the CPU's cache and in memory the allocator reuses; the
#: whole view at once was 4-5 times slower (a 512^2 view's 48 energies: 97 ms against 21 ms, one thread).
SPECTRUM_PIXELS = 1 << 14
#: What the imaging chain (``ct2x.imaging``: scatter, blur, noise, processing, on all views at once) adds per
#: detector pixel on top of the march: about 520-570 B measured (peak resident memory, one chest DR view of
#: 1024^2 and 2048^2 on the CPU), rounded up.
BYTES_PER_CHAIN_PIXEL = 600

#: A view in which no ray crosses this much tissue (soft tissue and bone, g/cm^2: 0.1 mm of water) is
#: empty: the rays miss the CT or cross only air.
EMPTY_AREA_DENSITY = 0.01


def spectrum_sum_bytes(energies: int, pixels: int) -> int:
    """Working memory (bytes) of :func:`transmitted_fraction` for a view of ``pixels`` at ``energies`` energies."""
    return BYTES_PER_PIXEL_ENERGY * energies * min(pixels, SPECTRUM_PIXELS)


def render_memory_bytes(
    volume: CTVolume, views: Sequence[CArm], spectrum: str = "60KV_AL35", marcher: str = "numba",
    memory_bytes: int = DEFAULT_MEMORY_BYTES, imaging: bool = False,
) -> int:  # fmt: skip
    """Estimated peak working memory (bytes) of :func:`render_drr` for ``views`` of ``volume``
    (host memory; the CT's own array is not counted), before anything is allocated; with ``imaging``, of the
    imaging chain's radiographs of them (:data:`BYTES_PER_CHAIN_PIXEL` more per pixel)."""
    rays = sum(int(np.prod(v.detector_shape)) for v in views)
    largest_view = max(int(np.prod(v.detector_shape)) for v in views)
    energies = len(get_spectrum(spectrum).energies_kev)
    need = (BYTES_PER_RAY + (BYTES_PER_CHAIN_PIXEL if imaging else 0)) * rays
    need += spectrum_sum_bytes(energies, largest_view)
    need += BYTES_PER_VOXEL.get(marcher, BYTES_PER_VOXEL["torch"]) * int(np.prod(volume.array.shape))
    return need + (memory_bytes if marcher == "torch" else 0)


def check_render_memory(
    volume: CTVolume, views: CArm | Sequence[CArm], *, spectrum: str = "60KV_AL35",
    device: str | torch.device = "cpu", backend: Backend = "auto", memory_bytes: int = DEFAULT_MEMORY_BYTES,
    fix: str = "use a smaller detector (ct2x drr --size) or resample the CT coarser", imaging: bool = False,
) -> None:  # fmt: skip
    """Refuse a render that cannot fit in this machine's memory, warn about one that needs more than is
    free now (:func:`ct2x.memory.check_memory`, with the estimate of :func:`render_memory_bytes`; ``imaging``:
    the views go through the imaging chain); ``fix`` is the advice of the message (how the caller's user
    needs less)."""
    views = _views(views)
    marcher = resolve_backend(backend if backend in MARCHERS else "auto", torch_device(device))
    need = render_memory_bytes(volume, views, spectrum, marcher, memory_bytes, imaging)
    rows, columns = views[0].detector_shape
    i, j, k = volume.shape_ijk
    what = f"rendering {len(views)} view(s) of {rows} x {columns} pixels of a {i} x {j} x {k} CT"
    _check_memory(need, what, fix)


def _warn_if_empty(area: torch.Tensor, volume: CTVolume, views: Sequence[CArm]) -> None:
    """One warning when no ray of a view crosses :data:`EMPTY_AREA_DENSITY` of tissue; ``area``: the
    per-material area densities ``(V, M, H, W)``, g/cm^2, material 0 = air."""
    largest = area[:, 1:].sum(dim=1).flatten(1).amax(dim=1)
    empty = [index for index, value in enumerate(largest.tolist()) if not value >= EMPTY_AREA_DENSITY]
    if not empty:
        return
    low, high = volume.corners_lps.min(axis=0), volume.corners_lps.max(axis=0)
    box = ", ".join(f"{axis} {a:.4g} to {b:.4g}" for axis, a, b in zip("LPS", low, high, strict=True))
    centre = ", ".join(f"{c:.4g}" for c in views[empty[0]].isocenter)
    which = f"{len(empty)} of {len(views)} views, e.g. view {empty[0] + 1}: " if len(views) > 1 else ""
    warnings.warn(
        f"a DRR is empty ({which}no ray crosses 0.1 mm of tissue): the rays "
        f"miss the CT or cross only air; the CT spans {box} mm (spacing "
        f"{', '.join(f'{s:g}' for s in volume.spacing)} mm) and the isocenter is at ({centre}) mm: check the "
        "isocenter, the CT's spacing and its HU",
        stacklevel=3,
    )


def _step(step: float) -> float:
    """The ray-marching step (voxels, of the smallest spacing) as a float, else a one-line error."""
    return positive_finite("the ray-marching step", step, "voxels (e.g. 0.1)")


def _photons(photons: float | None) -> float | None:
    """Photons per pixel as a float (``None``: no noise), else a one-line error."""
    return None if photons is None else positive_finite("photons", photons, "photons per pixel (e.g. 1e6)")


def _views(views: CArm | Sequence[CArm]) -> list[CArm]:
    views = [views] if isinstance(views, CArm) else list(views)
    if not views or not all(isinstance(v, CArm) for v in views):
        raise CT2XError("give one or more ct2x.geometry.CArm views to render")
    return views


def _hu_array(volume: CTVolume) -> np.ndarray:
    if not isinstance(volume, CTVolume):
        raise CT2XError(f"expected a ct2x.volume.CTVolume, got {type(volume).__name__}")
    return np.asarray(volume.array, dtype=np.float32)


def _hu(volume: CTVolume, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(_hu_array(volume)).to(device)


@dataclass(frozen=True)
class Materials:
    """A CT as the polyenergetic DRR reads it (:func:`materials`): DeepDRR's density (g/cm^3) and
    material index per voxel, ``(K, J, I)`` like ``volume.array``, on ``density.device``, for the
    ray marcher ``marcher`` (for ``"numba"``, the kernel's cell labels: the index with a uniform-cell
    bit, :func:`ct2x.drr.kernel.material_cells`). Rendering many views one call at a time from one
    ``Materials`` converts the CT once."""

    volume: CTVolume
    density: torch.Tensor
    material: torch.Tensor
    marcher: str


def materials(volume: CTVolume, *, device: str | torch.device = "cpu", backend: Marcher = "auto") -> Materials:
    """The CT's per-voxel density and material for :func:`render_drr`, computed once.

    ``backend`` picks the ray marcher as in :func:`render_drr` (``"numba"``, ``"torch"`` or
    ``"auto"``); the numba kernel's form is 5 bytes a voxel, on the CPU.
    """
    device = torch_device(device)
    marcher = resolve_backend(backend, device)
    if marcher == "numba":
        from ct2x.drr.kernel import material_cells

        with numba_threads():
            density, material = (torch.from_numpy(a) for a in material_cells(_hu_array(volume)))
    else:
        hu = _hu(volume, device)
        density, material = hu_to_density(hu), hu_to_material_index(hu)
    return Materials(volume, density, material, marcher)


def render_drr(
    volume: CTVolume | Materials,
    views: CArm | Sequence[CArm],
    *,
    step: float = 0.1,
    spectrum: str = "60KV_AL35",
    photons: float | None = None,
    seed: int | None = None,
    device: str | torch.device = "cpu",
    backend: Backend = "auto",
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    check_memory: bool = True,
) -> torch.Tensor:
    """Polyenergetic DRRs, ``-log`` of the transmitted fraction, like DeepDRR's.

    Model: HU -> materials (air / soft tissue / bone by thresholds) and densities (g/cm^3)
    -> per-material area densities ``a_m`` (g/cm^2) along each ray -> intensity
    ``I = sum_E w(E) exp(-sum_m (mu/rho)_m(E) a_m)`` with ``w`` the energy-integrating
    detector weights of ``spectrum`` (sum 1) -> with ``photons``, Poisson noise, counts
    ``~ Poisson(photons * I)`` drawn per pixel from ``(seed, pixel index)``
    (:mod:`ct2x.drr.noise`) -> ``-log(counts / photons)`` (without, ``-log(I)``).
    Zero counts are set to one photon to keep the log finite. Scatter is not modelled.

    Args:
        volume: the CT in HU, or its :func:`materials` (then their device and ray marcher are
            used; ``device`` and ``backend`` only choose DeepDRR or not).
        views: one or more C-arm views with one detector shape.
        step: ray-marching step in voxels (of the smallest spacing).
        spectrum: tube spectrum name ``<kV>KV_AL<mm Al x 10>`` (see ``ct2x.drr.spectrum``).
        photons: photons per pixel of the unattenuated beam: adds Poisson noise at that
            level (DeepDRR's default is 1e6); ``None`` renders without noise.
        seed: makes the noise reproducible (``None``: fresh noise each call); pixel ``n`` of the
            ``(V, H, W)`` result draws from ``(seed, n)`` only, so a CT stored in another
            orientation (or any change in the last digits of ``I``) keeps the noise pattern.
        device: ``"cpu"`` or ``"cuda"``.
        backend: ``"numba"`` (this package's compiled CPU kernel), ``"torch"`` (this
            package's torch marcher, CPU or CUDA), ``"deepdrr"`` (DeepDRR on a CUDA GPU,
            optional extra) or ``"auto"``: on a CUDA device DeepDRR when available, else
            torch; on the CPU numba when it imports, else torch (with one warning).
        memory_bytes: working-memory budget of one chunk of ray samples (torch backend).
        check_memory: first refuse a render that cannot fit in memory, warn about one that needs
            more than is free (:func:`check_render_memory`; off when the caller checked already).

    Returns:
        ``(V, H, W)`` float32 tensor on ``device``; dimensionless (0 where nothing attenuates).

    Warns:
        UserWarning: a view is empty (no ray crosses :data:`EMPTY_AREA_DENSITY` of tissue: the
        rays miss the CT or cross only air).
    """
    if backend not in BACKENDS:
        raise CT2XError(f"unknown DRR backend {backend!r}: use one of {', '.join(BACKENDS)}")
    views, step = _views(views), _step(step)
    spec = get_spectrum(spectrum)
    photons = _photons(photons)
    device = torch_device(device)
    if backend == "deepdrr" and not deepdrr_backend.available():
        raise CT2XError(deepdrr_backend.UNAVAILABLE)
    ct = volume.volume if isinstance(volume, Materials) else volume
    if not isinstance(ct, CTVolume):
        raise CT2XError(f"expected a ct2x.volume.CTVolume, got {type(ct).__name__}")
    if check_memory:
        marcher = volume.marcher if isinstance(volume, Materials) else backend
        check_render_memory(ct, views, spectrum=spectrum, device=device, backend=marcher, memory_bytes=memory_bytes)
    if backend == "deepdrr" or (backend == "auto" and device.type == "cuda" and deepdrr_backend.available()):
        return deepdrr_backend.render(ct, views, step=step, spectrum=spec, photons=photons, seed=seed).to(device)
    area = area_densities(volume, views, step=step, device=device, backend=backend, memory_bytes=memory_bytes)
    return drr_from_area(area, spectrum=spectrum, photons=photons, seed=seed)


def area_densities(
    volume: CTVolume | Materials,
    views: CArm | Sequence[CArm],
    *,
    step: float = 0.1,
    device: str | torch.device = "cpu",
    backend: Marcher = "auto",
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
) -> torch.Tensor:
    """Per-material area densities along each ray: what the polyenergetic DRR is computed from.

    Each voxel's density (g/cm^3, DeepDRR's HU conversion) counts for its material only
    (air, soft tissue, bone: :data:`ct2x.drr.materials.MATERIALS` order), integrated along the
    ray from the source to the detector pixel.

    Args:
        volume: the CT in HU, or its :func:`materials` (then their device and ray marcher are used).
        views, step, device, backend, memory_bytes: as for :func:`render_drr` (``backend``: a ray
            marcher, ``"numba"``, ``"torch"`` or ``"auto"``).

    Returns:
        ``(V, M, H, W)`` float32 g/cm^2 on the device of the materials.
    """
    views, step = _views(views), _step(step)
    ct = volume.volume if isinstance(volume, Materials) else volume
    prepared = volume if isinstance(volume, Materials) else materials(ct, device=device, backend=backend)
    area = project(prepared.density, ct, views, step=step, memory_bytes=memory_bytes, backend=prepared.marcher,
                   labels=prepared.material, channels=len(MATERIALS))  # fmt: skip
    area = (area / _MM_PER_CM).clamp_min_(0.0)  # g/cm^3 * mm -> g/cm^2; the march's round-off can leave -1e-17
    _warn_if_empty(area, ct, views)
    return area


def transmitted_fraction(
    area: torch.Tensor, spectrum: str = "60KV_AL35", mu_rho: np.ndarray | None = None
) -> torch.Tensor:
    """The noise-free energy-integrated transmitted fraction ``I = sum_E w(E) exp(-sum_m (mu/rho)_m(E) a_m)``
    (1 for an unattenuated ray) from area densities ``(V, M, H, W)`` g/cm^2 (:func:`area_densities`), with
    ``w`` the energy-integrating detector weights of ``spectrum`` (as for :func:`render_drr`). ``mu_rho``: the
    ``(M, E)`` mass attenuation (cm^2/g) of ``area``'s channels at the spectrum's energies, default the DRR's
    materials' (:func:`ct2x.drr.materials.attenuation_table`). Returns ``(V, H, W)`` float32 on ``area``'s device."""
    spec = get_spectrum(spectrum)
    device = area.device
    table = attenuation_table(spec.energies_kev) if mu_rho is None else mu_rho
    minus_mu = -torch.as_tensor(table, dtype=torch.float32, device=device).T  # (E, M)
    weights = torch.as_tensor(np.array(spec.weights), dtype=torch.float32, device=device)  # (E,)
    views, channels, height, width = area.shape
    flat = area.reshape(views, channels, height * width)
    out = torch.empty(views, height * width, dtype=torch.float32, device=device)
    for view in range(views):  # a chunk of pixels at a time (SPECTRUM_PIXELS)
        for start in range(0, height * width, SPECTRUM_PIXELS):
            stop = start + SPECTRUM_PIXELS
            out[view, start:stop] = weights @ (minus_mu @ flat[view, :, start:stop]).exp_()
    return out.reshape(views, height, width)


def drr_from_area(
    area: torch.Tensor, *, spectrum: str = "60KV_AL35", photons: float | None = None, seed: int | None = None
) -> torch.Tensor:
    """The polyenergetic DRR (``-log`` transmitted fraction) from area densities ``(V, M, H, W)`` g/cm^2
    (:func:`area_densities`); ``spectrum``, ``photons`` and ``seed`` as for :func:`render_drr`.
    Returns ``(V, H, W)`` float32 on ``area``'s device."""
    get_spectrum(spectrum)  # a bad spectrum name is reported before bad photons
    photons = _photons(photons)
    intensity = transmitted_fraction(area, spectrum)  # (V, H, W), 1 for an unattenuated ray
    if photons is not None:
        counts = poisson_noise(intensity * photons, None if seed is None else int(seed)).clamp_min(1.0)
        intensity = counts / photons
    return -torch.log(intensity.clamp_min(torch.finfo(torch.float32).tiny))


def line_integral(
    volume: CTVolume,
    views: CArm | Sequence[CArm],
    *,
    step: float = 0.1,
    values: np.ndarray | torch.Tensor | None = None,
    device: str | torch.device = "cpu",
    backend: Marcher = "auto",
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
) -> torch.Tensor:
    """Monoenergetic line integrals of a voxel field, in value x mm.

    Args:
        volume: the CT (HU), giving the placement and, by default, the field.
        views: one or more C-arm views with one detector shape.
        step: ray-marching step in voxels (of the smallest spacing).
        values: the field, laid out like ``volume.array`` (``(K, J, I)``; or
            ``(C, K, J, I)`` for several channels). Default: DeepDRR's mass density in
            g/cm^3 from the HU, so the result is in (g/cm^3) x mm.
        device: ``"cpu"`` or ``"cuda"``.
        backend: ray marcher, ``"numba"``, ``"torch"`` or ``"auto"`` (as for :func:`render_drr`).
        memory_bytes: working-memory budget of one chunk of ray samples (torch backend).

    Returns:
        ``(V, H, W)`` (or ``(V, C, H, W)``) float32 tensor on ``device``.
    """
    views, step, device = _views(views), _step(step), torch_device(device)
    if values is None:
        field = hu_to_density(_hu(volume, device))
    else:
        field = torch.as_tensor(values).to(device=device, dtype=torch.float32)
        if field.dim() not in (3, 4):
            raise CT2XError(
                f"values must be (K, J, I) or (C, K, J, I) like the CT's array, got shape {tuple(field.shape)}"
            )
    return project(field, volume, views, step=step, reduce="sum", memory_bytes=memory_bytes, backend=backend)


def mip(
    volume: CTVolume,
    views: CArm | Sequence[CArm],
    *,
    step: float = 0.1,
    device: str | torch.device = "cpu",
    backend: Marcher = "auto",
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
) -> torch.Tensor:
    """Maximum intensity projection of the HU along each ray (the PAM's input at a pose).

    Rays that miss the volume get the CT's minimum HU. ``backend``: the ray marcher, as
    for :func:`line_integral`.

    Returns:
        ``(V, H, W)`` float32 HU on ``device``.
    """
    views, step, device = _views(views), _step(step), torch_device(device)
    hu = _hu(volume, device)
    return project(hu, volume, views, step=step, reduce="max", memory_bytes=memory_bytes, backend=backend)
