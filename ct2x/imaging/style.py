"""The imaging chain in the style of a reference film, with no learning: the chain is run with a base setting of
the device, its look (tone curve, band gains, dose and detector MTF) is fitted to the film
(:func:`ct2x.imaging.fit.fit_style`), and the chain is run again with the fitted parameters.

This is the one path from a CT's area densities and a film to radiographs in the film's style: ``ct2x
synthesize --style FILM`` (alone, or under a model whose X-ray path is anchored on the chain), the training
samples of such a model (:class:`ct2x.data.CTViewDataset`) and ``ct2x evaluate``'s chain row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ct2x.geometry import CArm
from ct2x.imaging.chain import simulate
from ct2x.imaging.filters import view_list
from ct2x.imaging.fit import fit_style
from ct2x.imaging.parameters import ImagingParameters, resolve

#: The look is fitted on the body: the exposed pixels whose rays cross at least this water-equivalent thickness,
#: cm. A film shows a patient edge to edge, a CT's view also the air beside it; matching the film's grey levels
#: to the air as well would flatten the body's.
BODY_CM = 2.0


@dataclass(frozen=True)
class Styled:
    """Radiographs in a film's style: ``image`` ``(V, H, W)`` float32 in [0, 1] (bright = attenuating), on the
    area densities' device, and the fitted ``parameters`` (one setting of the device for every view)."""

    image: torch.Tensor
    parameters: ImagingParameters


@torch.no_grad()
def styled(
    area: torch.Tensor,
    views: CArm | Sequence[CArm],
    film: np.ndarray | torch.Tensor,
    base: str | ImagingParameters,
    *,
    seed: int,
    covered: torch.Tensor | None = None,
) -> Styled:
    """The chain's radiographs of ``area`` at ``views``, its look fitted to ``film`` (:func:`fitted`, then the
    chain run again with the fitted parameters, its noise drawn from ``seed + 1``); the arguments as there."""
    views, _ = view_list(views)
    parameters = fitted(area, views, film, base, seed=seed, covered=covered)
    return Styled(simulate(area, views, parameters, seed=seed + 1).image, parameters)


@torch.no_grad()
def fitted(
    area: torch.Tensor,
    views: CArm | Sequence[CArm],
    film: np.ndarray | torch.Tensor,
    base: str | ImagingParameters,
    *,
    seed: int,
    covered: torch.Tensor | None = None,
) -> ImagingParameters:
    """The chain's parameters for ``area`` at ``views`` with their look fitted to ``film``: the chain run with
    ``base``, then :func:`ct2x.imaging.fit.fit_style` on the body where the CT covers the field.

    Args:
        area: per-material area densities ``(V, M, H, W)`` g/cm^2 (:func:`ct2x.drr.area_densities`).
        views: one :class:`ct2x.geometry.CArm` per image.
        film: the reference radiograph on the views' pixel grid, ``(H, W)`` (one film for every view; the fit
            pools the views' statistics) or ``(V, H, W)``; [0, 1] or 8/16-bit, bright = attenuating
            (:func:`ct2x.imaging.fit.film_image`).
        base: the preset (or parameters) the fit starts from and keeps (tube, scatter, grid, geometry).
        seed: the base run draws its noise from ``seed``.
        covered: ``(V, H, W)`` bool, the pixels whose rays cross the CT's whole length (:func:`ct2x.drr.coverage`):
            the look is fitted there only, beside the body rule (:data:`BODY_CM`). Where a view's field reaches
            past the CT's ends, its rows show the CT's cut, an edge no film has, whose contrast the fit would
            otherwise take for the film's coarse bands (default: every pixel).
    """
    base = resolve(base)
    views, _ = view_list(views)
    stages = simulate(area, views, base, seed=seed)
    films = film if np.ndim(film) == 3 else np.broadcast_to(np.asarray(film), (len(views), *np.shape(film)))
    region = stages.thickness > BODY_CM
    if covered is not None:
        region = region & covered.to(region.device).reshape(region.shape).bool()
    return fit_style(films, stages, views, base, region=region)
