"""DRRs with DeepDRR's physical model on a torch backend (CPU or CUDA).

* :func:`render_drr`: polyenergetic DRR (``-log`` transmitted fraction), optional Poisson noise;
* :func:`line_integral`: monoenergetic line integrals of a voxel field (value x mm);
* :func:`mip`: maximum intensity projection of the HU.

Submodules: ``spectrum`` (SpekPy tube spectra), ``materials`` (HU -> materials, densities,
xraydb attenuation), ``projector`` (the ray marcher), ``deepdrr_backend`` (DeepDRR, GPU only).
"""

from ct2x.drr.render import line_integral, mip, render_drr

__all__ = ["line_integral", "mip", "render_drr"]
