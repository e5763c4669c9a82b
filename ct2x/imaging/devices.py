"""Support devices in the beam: ECG electrodes with their lead wires, central venous catheters and feeding
tubes, the hardware on and in the patient of most bedside and intensive-care chest films, as objects in the
patient's 3D space projected through every view, so that the views of one exposure series show the same
devices where the geometry puts them.

Frames and units: devices are placed about the first view's isocenter in the patient's LPS frame, mm; each
is a tube (its axis a smooth curve sampled every :data:`AXIS_STEP_MM`) made of coaxial shells of one
material each, or a sphere (one axis point). A pixel's path through a shell is the chord of its circle at the
ray's distance from the axis in the object (the distance on the detector divided by the point's
magnification) averaged over the pixel's width there (the detector integrates over its pixel: a wire
thinner than a pixel keeps its cross-section), lengthened by ``1 / sin`` of the angle between ray and
axis. The area densities (g/cm^2 per material, per pixel) enter the primary inside the spectrum integral
with the body's (:func:`transmitted`): the beam hardened by the body meets the device. What lies beyond the
detector plane, behind the source or within :data:`NEAR_SOURCE_MM` of it along the beam casts no shadow.

Devices, their sizes and materials (typical catalogue values; compositions by weight):

* **ECG lead**: a shielded lead wire (:data:`LEAD_SHELLS`: a stranded copper conductor of about 0.3 mm^2,
  a solid-copper equivalent of radius 0.3 mm, a braided copper shield, a PVC jacket of 3 mm), from an
  electrode on the anterior chest wall out of the field; the electrode's snap stud, nickel-plated brass, as
  a sphere of 2 mm radius, and the lead's snap clip as a ring of :data:`CLIP_RADIUS_MM` in the coronal plane.
* **Central venous catheter**: 7 Fr (2.3 mm outer, 1.3 mm inner diameter) polyurethane made radio-opaque
  with 20 % barium sulphate, from a neck vein to the superior vena cava.
* **Feeding tube**: 12 Fr (4 mm outer, 2.6 mm inner diameter) of the same radio-opaque polyurethane, from
  the mouth down the oesophagus to the stomach.

Which devices and where is drawn from :attr:`ImagingParameters.devices_seed`: a lead with probability
0.6, a catheter 0.25, a tube 0.15; positions in the anatomical ranges of :func:`draw_devices`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from ct2x.drr.materials import attenuation_table, mixture_attenuation
from ct2x.drr.render import transmitted_fraction
from ct2x.drr.spectrum import get_spectrum
from ct2x.geometry import CArm

#: Device materials: (fractions by weight per element, density g/cm^3). Polyurethane taken as C 0.6,
#: H 0.07, N 0.1, O 0.23; PVC as (C2H3Cl)n; barium sulphate BaSO4.
DEVICE_MATERIALS: dict[str, tuple[dict[str, float], float]] = {
    "copper": ({"Cu": 1.0}, 8.96),
    "brass": ({"Cu": 0.63, "Zn": 0.37}, 8.5),
    "pvc": ({"C": 0.384, "H": 0.048, "Cl": 0.567}, 1.38),
    "barium polyurethane": ({"C": 0.48, "H": 0.056, "N": 0.08, "O": 0.184 + 0.055, "Ba": 0.118, "S": 0.027}, 1.5),
}
#: A shielded ECG lead wire, (material, inner, outer radius mm) from the axis out: a copper conductor, its PVC
#: insulation, a braided copper shield (about 0.1 mm of copper where the braid covers 85 %), the PVC jacket.
LEAD_SHELLS = (("copper", 0.0, 0.3), ("pvc", 0.3, 0.9), ("copper", 0.9, 1.0), ("pvc", 1.0, 1.5))
#: Radius of the lead's snap clip about the electrode's stud, a ring of 0.4 mm wire, mm.
CLIP_RADIUS_MM = 4.0
#: Spacing of the points along a device's axis, mm.
AXIS_STEP_MM = 1.0
#: Spacing of the projected axis points on the detector, pixels (the distance map's accuracy).
PROJECTED_STEP_PX = 0.25
#: The most (projected point, pixel) pairs one step of the distance map holds (about 100 MB of float64 arrays).
CHUNK_ENTRIES = 2_000_000
#: The nearest a device may lie to the focal spot along the beam and cast a shadow, mm (the tube housing and
#: collimator take the first tens of centimetres).
NEAR_SOURCE_MM = 100.0
#: The smallest ``sin`` of the angle between a ray and a device's axis (a ray along a tube meets at most
#: this much of it: about 20 times the chord).
MIN_SIN = 0.05


@dataclass(frozen=True)
class Device:
    """One device: an axis of points ``(N, 3)`` LPS mm (one point: a sphere) and its coaxial shells, each
    ``(material, inner radius mm, outer radius mm)`` with the material a key of :data:`DEVICE_MATERIALS`."""

    kind: str
    axis: np.ndarray
    shells: tuple[tuple[str, float, float], ...]


def _bezier(start: np.ndarray, control: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Points of the quadratic Bezier curve ``start -> end`` pulled toward ``control``, every ~AXIS_STEP_MM."""
    length = np.linalg.norm(control - start) + np.linalg.norm(end - control)
    t = np.linspace(0.0, 1.0, max(2, int(np.ceil(length / AXIS_STEP_MM)) + 1))[:, None]
    return (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end


def _lead(rng: np.random.Generator, centre: np.ndarray) -> list[Device]:
    """An electrode on the anterior chest wall (L -120..120, 90-120 mm anterior, S -100..120 mm of the
    isocenter) and its wire, 250-450 mm long, leaving in a random direction of the coronal plane."""
    electrode = centre + np.array([rng.uniform(-120, 120), -rng.uniform(90, 120), rng.uniform(-100, 120)])
    angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(250, 450)
    end = electrode + length * np.array([np.cos(angle), 0.0, np.sin(angle)])
    control = (electrode + end) / 2 + np.array([rng.uniform(-80, 80), -rng.uniform(0, 30), rng.uniform(-80, 80)])
    turn = np.linspace(0.0, 2 * np.pi, 64)[:, None]
    ring = electrode + CLIP_RADIUS_MM * (np.cos(turn) * [1.0, 0.0, 0.0] + np.sin(turn) * [0.0, 0.0, 1.0])
    return [
        Device("ECG lead", _bezier(electrode, control, end), LEAD_SHELLS),
        Device("ECG electrode", electrode[None], (("brass", 0.0, 2.0),)),
        Device("ECG clip", ring, (("brass", 0.0, 0.4),)),
    ]


def _catheter(rng: np.random.Generator, centre: np.ndarray) -> list[Device]:
    """A central venous catheter from a neck vein (20-70 mm either side, 150-250 mm superior) to the superior
    vena cava (0-40 mm right of the isocenter, S -40..40 mm)."""
    side = rng.choice((-1.0, 1.0))
    entry = centre + np.array([side * rng.uniform(20, 70), -rng.uniform(0, 40), rng.uniform(150, 250)])
    tip = centre + np.array([-rng.uniform(0, 40), -rng.uniform(0, 30), rng.uniform(-40, 40)])
    control = (entry + tip) / 2 + np.array([rng.uniform(-30, 30), 0.0, rng.uniform(-20, 20)])
    return [Device("central venous catheter", _bezier(entry, control, tip), (("barium polyurethane", 0.65, 1.15),))]


def _tube(rng: np.random.Generator, centre: np.ndarray) -> list[Device]:
    """A feeding tube from the mouth (300 mm superior) down the midline to the stomach (40-100 mm left,
    150-200 mm inferior)."""
    mouth = centre + np.array([rng.uniform(-10, 10), -rng.uniform(20, 60), 300.0])
    stomach = centre + np.array([rng.uniform(40, 100), -rng.uniform(0, 40), -rng.uniform(150, 200)])
    control = centre + np.array([rng.uniform(-10, 20), rng.uniform(0, 40), rng.uniform(-20, 20)])
    return [Device("feeding tube", _bezier(mouth, control, stomach), (("barium polyurethane", 1.3, 2.0),))]


def draw_devices(count: int, seed: int, isocenter: Sequence[float]) -> list[Device]:
    """``count`` devices (a lead counts its electrode with it) drawn from ``seed`` about ``isocenter`` (LPS mm)."""
    rng = np.random.default_rng(seed)
    centre = np.asarray(isocenter, dtype=np.float64)
    devices: list[Device] = []
    for _ in range(count):
        draw = rng.random()
        make = _lead if draw < 0.6 else _catheter if draw < 0.85 else _tube
        devices += make(rng, centre)
    return devices


def _resampled(points: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A projected axis ``(N, 2)`` px and per-point values ``(N, C)`` resampled every PROJECTED_STEP_PX."""
    lengths = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))]
    if len(points) == 1 or lengths[-1] == 0:
        return points[:1], values[:1]
    at = np.linspace(0.0, lengths[-1], int(np.ceil(lengths[-1] / PROJECTED_STEP_PX)) + 1)
    return (np.stack([np.interp(at, lengths, column) for column in points.T], 1),
            np.stack([np.interp(at, lengths, column) for column in values.T], 1))  # fmt: skip


def _distance(device: Device, view: CArm) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per detector pixel ``(H, W)``: the distance (mm, in the object) from the pixel's centre ray to the
    device's axis where it passes nearest (inf where the pixel does not reach the outer radius), the obliquity
    ``1 / sin`` there, and half the pixel's width in the object there, mm."""
    height, width = view.detector_shape
    pitch = float(np.mean(view.pixel_spacing))
    axis = device.axis
    rays = axis - view.source
    magnification = view.sdd / (rays @ view.viewing_direction)
    if len(axis) > 1:
        tangent = np.gradient(axis, axis=0)
        sine = np.linalg.norm(np.cross(tangent, rays), axis=1) / (
            np.linalg.norm(tangent, axis=1) * np.linalg.norm(rays, axis=1)
        )
    else:  # a sphere: every ray meets it square on
        sine = np.ones(1)
    points, values = _resampled(view.project(axis), np.stack([magnification, np.maximum(sine, MIN_SIN)], 1))
    outer = max(shell[2] for shell in device.shells)
    reach = int(np.ceil(outer * magnification.max() / pitch + 0.5)) + 1
    offsets = np.arange(-reach, reach + 1)
    nearest, obliquity, halves = np.full(height * width, np.inf), np.ones(height * width), np.ones(height * width)
    per_chunk = max(1, CHUNK_ENTRIES // len(offsets) ** 2)  # bounds the memory of a device seen close up
    for start in range(0, len(points), per_chunk):
        at, value = points[start : start + per_chunk], values[start : start + per_chunk]
        rows = np.round(at[:, 1])[:, None, None] + offsets[None, :, None]
        columns = np.round(at[:, 0])[:, None, None] + offsets[None, None, :]
        rows, columns = np.broadcast_arrays(rows, columns)
        half = np.broadcast_to(pitch / (2 * value[:, 0, None, None]), rows.shape)
        object_mm = np.hypot(rows - at[:, 1, None, None], columns - at[:, 0, None, None]) * 2 * half
        inside = (rows >= 0) & (rows < height) & (columns >= 0) & (columns < width) & (object_mm < outer + half)
        flat = (rows * width + columns)[inside].astype(np.int64)
        np.minimum.at(nearest, flat, object_mm[inside])
        hit = object_mm[inside] == nearest[flat]
        obliquity[flat[hit]] = np.broadcast_to(1.0 / value[:, 1, None, None], rows.shape)[inside][hit]
        halves[flat[hit]] = half[inside][hit]
    return nearest.reshape(height, width), obliquity.reshape(height, width), halves.reshape(height, width)


def _between_source_and_detector(device: Device, view: CArm) -> list[Device]:
    """The parts of ``device`` (runs of consecutive axis points) that lie between :data:`NEAR_SOURCE_MM` from the
    focal spot and the detector plane along ``view``'s axis: what is beyond the detector, behind the source or
    in the tube housing casts no shadow."""
    depth = (device.axis - view.source) @ view.viewing_direction
    inside = np.r_[False, (depth > NEAR_SOURCE_MM) & (depth < view.sdd), False]
    edges = np.flatnonzero(np.diff(inside.astype(np.int8)))
    return [replace(device, axis=device.axis[start:stop]) for start, stop in zip(edges[::2], edges[1::2], strict=True)]


def _chord(radius: float, distance: np.ndarray, half: np.ndarray) -> np.ndarray:
    """The mean length (mm) of the paths through a circle of ``radius`` mm of rays ``distance - half`` to
    ``distance + half`` mm from its centre (a pixel's footprint across a wire: the detector integrates the path
    over its pixel, so a wire thinner than a pixel keeps its cross-section instead of vanishing between
    centres). Zero for a radius of 0."""
    if radius == 0:
        return np.zeros_like(distance)

    def area(x: np.ndarray) -> np.ndarray:  # the integral of 2 sqrt(r^2 - t^2) dt from 0 to x
        x = np.clip(x, -radius, radius)
        return x * np.sqrt(radius**2 - x**2) + radius**2 * np.arcsin(x / radius)

    finite = np.isfinite(distance)
    low, high = np.where(finite, distance - half, 0.0), np.where(finite, distance + half, 0.0)
    return (area(high) - area(low)) / (2 * half)


def device_paths(devices: Sequence[Device], views: Sequence[CArm]) -> np.ndarray:
    """The devices' area densities ``(V, K, H, W)`` g/cm^2 on each view's detector, one channel per material of
    :data:`DEVICE_MATERIALS` (in its order): each shell's chord times the obliquity, times its density."""
    names = list(DEVICE_MATERIALS)
    height, width = views[0].detector_shape
    paths = np.zeros((len(views), len(names), height, width))
    for v, view in enumerate(views):
        for device in (part for whole in devices for part in _between_source_and_detector(whole, view)):
            distance, obliquity, half = _distance(device, view)
            for material, inner, outer in device.shells:
                chord_cm = (_chord(outer, distance, half) - _chord(inner, distance, half)) * obliquity / 10.0
                paths[v, names.index(material)] += chord_cm * DEVICE_MATERIALS[material][1]
    return paths


def transmitted(area: torch.Tensor, paths: torch.Tensor, spectrum: str, body: torch.Tensor) -> torch.Tensor:
    """The primary transmitted fraction ``(V, H, W)`` through the body's area densities ``area`` ``(V, M, H, W)``
    and the devices' ``paths`` ``(V, K, H, W)`` (g/cm^2, :func:`device_paths`) for the energy-integrating
    detector weights of ``spectrum``: ``body`` (the fraction without devices) where no device lies, else the
    DRR's spectrum sum (:func:`ct2x.drr.render.transmitted_fraction`) over the body's materials and the
    devices' together, computed there."""
    hit = (paths > 0).any(1)  # (V, H, W)
    if not bool(hit.any()):
        return body
    energies = get_spectrum(spectrum).energies_kev
    table = np.concatenate(
        [attenuation_table(energies), [mixture_attenuation(c, energies) for c, _ in DEVICE_MATERIALS.values()]]
    )
    crossed = torch.cat([area, paths], 1).permute(1, 0, 2, 3)[:, hit]  # (M + K, P): the pixels a device crosses
    out = body.clone()
    out[hit] = transmitted_fraction(crossed[None, :, :, None], spectrum, table)[0, :, 0]
    return out


def with_devices(area: torch.Tensor, body: torch.Tensor, views: Sequence[CArm], count: int, seed: int,
                 spectrum: str) -> torch.Tensor:  # fmt: skip
    """The primary ``body`` ``(V, H, W)`` of area densities ``area`` with ``count`` devices drawn from ``seed``
    about the first view's isocenter (:func:`draw_devices`) in the beam; ``body`` itself when ``count`` is 0."""
    if count == 0:
        return body
    devices = draw_devices(count, seed, views[0].isocenter)
    paths = torch.as_tensor(device_paths(devices, views), dtype=torch.float32, device=area.device)
    return transmitted(area, paths, spectrum, body)
