"""The patient's body in a CT, and the CT with what lies outside it (the couch) made air.

A CT holds more than the patient: the scanner's couch (a carbon-fibre shell over a foam core, often with a
thicker base and rails), its pads and straps. A radiograph has none of them, and in oblique and lateral views
of a wide field the couch's shells project as bright bands beside the body. :func:`body_mask` finds the body
the way CT body-contouring does (as, e.g., plastimatch's ``segment --body``): tissue above
:data:`TISSUE_HU`, cut from the couch by an in-plane opening of :data:`SEPARATION_MM`, the largest connected
part, with every voxel between two of its voxels along a row or column across the patient's long axis (its
cavities: lungs, airways, bowel gas), and the surface the opening took back. :func:`without_table` makes
everything else air.

Limits: a couch touching the skin over more than the opening's width stays; a body part lying apart from
the trunk over the whole scan (an arm beside the abdomen) and thin protrusions beyond the opening's width
(fingers, the ear's rim) go with the couch, as do a phantom's separate pieces. Arrays are ``(K, J, I)``
(slices, rows, columns) like :attr:`ct2x.volume.CTVolume.array`.

The opening and the dilation use ITK's ball (``BinaryBallStructuringElement``: the voxel offsets ``(a, b)``
with ``(a / (r_a + 1/2))^2 + (b / (r_b + 1/2))^2 <= 1``, in the plane across the long axis) and give
SimpleITK's ``BinaryMorphologicalOpening`` and ``BinaryDilate`` to the voxel (the tests compare them), about
four times faster: the ball is a stack of line segments, one per offset ``a``, and a binary erosion (dilation)
by it is the running minimum (maximum) along each segment's line (scipy's ``minimum_filter1d``), shifted by
``a`` and intersected (united) over the segments (1.0 s instead of 4.5 s on a 512 x 512 x 133 chest CT).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import SimpleITK as sitk

from ct2x.errors import CT2XError
from ct2x.volume import CTVolume, read_ct

#: Voxels above this HU are tissue, couch or devices: fat is about -100 HU, lung about -850 and the couch's
#: foam core below -700, so the lungs and the foam fall below it (the lungs are filled back as cavities).
TISSUE_HU = -500.0
#: Radius of the opening that cuts the couch's shells, pads and straps from the body, mm, in the planes across
#: the patient's long axis: parts thinner than twice this come off; the body's surface within it comes back.
SEPARATION_MM = 3.0
#: What :func:`without_table` puts outside the body, HU (air).
AIR_HU = -1000.0
#: How an image made with the couch removed records it (the NRRD header of ``ct2x drr`` and ``ct2x synthesize``,
#: the Slicer view's attribute).
TABLE_REMOVED = "outside the body made air (ct2x.body)"


def table_field(removed: bool) -> dict[str, str]:
    """The NRRD header field of an image made from a CT with its couch removed (``ct2x_table_removed``:
    :data:`TABLE_REMOVED`), none when it was not."""
    return {"ct2x_table_removed": TABLE_REMOVED} if removed else {}


def body_mask(volume: CTVolume) -> np.ndarray:
    """The patient's body in ``volume``: a ``(K, J, I)`` bool array, True inside the body (its cavities too).

    Raises CT2XError when no part of the CT above :data:`TISSUE_HU` is thicker than the opening's width.
    """
    long = volume.long_axis
    radius = [0 if axis == long else max(1, round(SEPARATION_MM / float(volume.spacing[axis]))) for axis in range(3)]
    tissue = volume.array > TISSUE_HU
    opened = _morphology(_morphology(tissue, radius, erode=True), radius, erode=False)
    parts = sitk.RelabelComponent(sitk.ConnectedComponent(_image(opened)), sortByObjectSize=True)
    trunk = sitk.GetArrayViewFromImage(parts) == 1
    if not trunk.any():
        raise CT2XError(
            f"no body found in the CT: nothing above {TISSUE_HU:g} HU is thicker than {2 * SEPARATION_MM:g} mm "
            "(a phantom or an empty image?); render it without --remove-table"
        )
    filled = _enclosed(trunk, long)
    return filled | (_morphology(filled, radius, erode=False) & tissue)


def without_table(volume: CTVolume) -> CTVolume:
    """``volume`` with every voxel outside :func:`body_mask` set to :data:`AIR_HU` (a new volume, same
    placement; ``volume`` is not changed)."""
    inside = body_mask(volume)
    air = np.float32(AIR_HU)
    return dataclasses.replace(volume, array=np.where(inside, volume.array, air).astype(np.float32, copy=False))


def read_patient(
    path: str | os.PathLike[str], series_uid: str | None = None, *, remove_table: bool = False
) -> CTVolume:
    """The CT at ``path`` (:func:`ct2x.volume.read_ct`), :func:`without_table` when ``remove_table``: how ``ct2x
    drr``, ``ct2x synthesize`` and ``ct2x prepare`` read theirs (``--remove-table``)."""
    volume = read_ct(path, series_uid=series_uid)
    return without_table(volume) if remove_table else volume


def _enclosed(mask: np.ndarray, long: int) -> np.ndarray:
    """``mask`` with every voxel that lies between two of its voxels along a line of either in-plane axis (the
    voxel axes other than ``long``) added: its cavities (lungs, airways, bowel gas), also where a cropped scan
    cuts through them (in 3D the airways open the lungs to the scan's end, and a crop opens them to its side,
    so a hole filling would miss them)."""
    filled = mask.copy()
    for axis in (2 - a for a in range(3) if a != long):  # voxel axis i, j, k is array axis 2, 1, 0
        after = np.maximum.accumulate(mask, axis=axis)
        before = np.flip(np.maximum.accumulate(np.flip(mask, axis), axis=axis), axis)
        filled |= after & before
    return filled


def _morphology(mask: np.ndarray, radius: list[int], *, erode: bool) -> np.ndarray:
    """The binary erosion (``erode``) or dilation of a ``(K, J, I)`` bool array by ITK's ball of ``radius``
    voxels along ``i, j, k``, one of them 0 (the long axis; module docstring). Outside the array counts as
    inside the mask for an erosion and outside it for a dilation, as in ITK."""
    shift_axis, line_axis = sorted(2 - axis for axis in range(3) if radius[axis] > 0)  # the line: the faster axis
    r_shift, r_line = radius[2 - shift_axis], radius[2 - line_axis]
    rows = {}  # offset along the shift axis -> the segment's half-width along the line
    for offset in range(-r_shift, r_shift + 1):
        rows[offset] = min(r_line, int((r_line + 0.5) * np.sqrt(1.0 - (offset / (r_shift + 0.5)) ** 2) + 1e-9))
    from scipy import ndimage  # on first use: the Slicer Synthesis module imports ct2x.body when Slicer starts

    running = ndimage.minimum_filter1d if erode else ndimage.maximum_filter1d
    combine = np.minimum if erode else np.maximum
    out = None
    count = mask.shape[shift_axis]
    for half_width in sorted(set(rows.values()), reverse=True):  # the widest, the centre row's, first; one at a time
        line = running(mask.view(np.uint8), 2 * half_width + 1, axis=line_axis, mode="nearest")
        out = line.copy() if out is None else out
        for offset in (o for o, w in rows.items() if w == half_width and o != 0):  # out[x] with line[x + offset]
            into = [slice(None)] * 3
            into[shift_axis] = slice(max(0, -offset), count - max(0, offset))
            source = [slice(None)] * 3
            source[shift_axis] = slice(max(0, offset), count - max(0, -offset))
            target = out[tuple(into)]
            combine(target, line[tuple(source)], out=target)
    return out.view(bool)


def _image(mask: np.ndarray) -> sitk.Image:
    """A uint8 SimpleITK image of a bool array (spacing 1: the radii are given in voxels)."""
    return sitk.GetImageFromArray(np.ascontiguousarray(mask, dtype=np.uint8))
