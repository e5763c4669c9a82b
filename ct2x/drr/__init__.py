"""DRRs with DeepDRR's physical model: a compiled CPU kernel (numba) and a torch marcher (CPU or CUDA).

* :func:`render_drr`: polyenergetic DRR (``-log`` transmitted fraction), optional Poisson noise;
* :func:`line_integral`: monoenergetic line integrals of a voxel field (value x mm);
* :func:`mip`: maximum intensity projection of the HU;
* :func:`materials`: the CT converted once for many :func:`render_drr` calls;
* :func:`area_densities` and :func:`drr_from_area`: the two halves of :func:`render_drr` (the
  per-material area densities along each ray, then the polyenergetic physics);
* :func:`coverage`: per detector pixel, whether its ray crosses the CT's whole length (not out through its
  first or last slice).

Submodules: ``spectrum`` (SpekPy tube spectra), ``materials`` (HU -> materials, densities,
xraydb attenuation), ``projector`` (the rays and the torch marcher; picks the backend),
``kernel`` (the numba marcher), ``deepdrr_backend`` (DeepDRR, GPU only), ``coverage`` (the rays that
cross the whole CT).
"""

from ct2x.drr.coverage import coverage
from ct2x.drr.render import Materials, area_densities, drr_from_area, line_integral, materials, mip, render_drr

__all__ = [
    "Materials", "area_densities", "coverage", "drr_from_area", "line_integral", "materials", "mip", "render_drr",
]  # fmt: skip
