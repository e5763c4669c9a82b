"""The imaging chain: what turns the DRR's line-integral physics (:mod:`ct2x.drr`) into a digital
radiograph: the primary beam plus scatter, blurred by the focal spot and the detector, with quantum and
electronic noise correlated by the detector, then the detector's logarithm and the console's processing.

Entry points:

* :func:`radiograph`: area densities ``(V, M, H, W)`` (:func:`ct2x.drr.area_densities`) and their views
  -> display radiographs ``(V, H, W)`` in [0, 1], bright = attenuating;
* :func:`simulate`: the same, with every stage (:class:`ImagingStages`: primary, thickness, beam, field,
  scatter, expected quanta, signal, flat field, log image, display image);
* :func:`console`: the console's processing alone, on a log image;
* :func:`fit_style`: the parameters that make the chain's output match a reference radiograph (no learning);
* :func:`styled`: the chain's radiographs in a film's style (run, fit, run again); :func:`fitted` the fit alone;
* :func:`render_radiographs`: a CT and its views -> radiographs (one march, then the chain): the path of
  ``ct2x drr``, the Slicer module and the evaluation;
* :class:`ImagingParameters`, :data:`PRESETS` (mobile C-arm flat panel and image intensifier, chest DR
  PA at 180 cm, bedside CR AP) and :func:`randomised` (every parameter drawn from its published range).

Stages, one module each: :mod:`~ct2x.imaging.beam` (primary, heel effect, field, dose),
:mod:`~ct2x.imaging.scatter` (scatter kernel, grid), :mod:`~ct2x.imaging.detector` (blur, noise, flat
field, log), :mod:`~ct2x.imaging.console` (multi-scale processing, unsharp mask, tone, marker, bit depth).
docs/imaging-chain.md describes each stage's model, units and sources.
"""

from ct2x.imaging.chain import ImagingStages, radiograph, simulate
from ct2x.imaging.console import console
from ct2x.imaging.fit import fit_style
from ct2x.imaging.parameters import PRESETS, ImagingParameters, Preset, randomised
from ct2x.imaging.render import render_radiographs
from ct2x.imaging.style import Styled, fitted, styled

__all__ = [
    "PRESETS", "ImagingParameters", "ImagingStages", "Preset", "Styled", "console", "fit_style", "radiograph",
    "randomised", "render_radiographs", "simulate", "styled", "fitted",
]  # fmt: skip
