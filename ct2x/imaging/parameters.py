"""The imaging chain's parameters: one validated dataclass, four presets of real imaging chains, and a
seeded draw of every parameter from its published range (domain randomisation).

Sources of the values (each preset's docstring line names which apply):

* [EUR] European Commission (1996), *European guidelines on quality criteria for diagnostic radiographic
  images*, EUR 16260: chest PA at 125 kV, focus-film distance 180 cm, grid r = 10, focal spot <= 1.3 mm,
  total filtration >= 3 mm Al.
* [IEC] IEC 60601-1-3: total filtration >= 2.5 mm Al; IEC 60336: nominal focal spot values (0.3-1.3 mm
  on radiography and C-arm tubes).
* [SF03] Samei E., Flynn M.J. (2003), *An experimental comparison of detector performance for direct and
  indirect digital radiography systems*, Med Phys 30:608: CsI/a-Si panels, DQE(0) about 0.6-0.7, MTF about
  0.2-0.3 at the Nyquist frequency of 0.14-0.2 mm pixels.
* [SF02] Samei E., Flynn M.J. (2002), *An experimental comparison of detector performance for computed
  radiography systems*, Med Phys 29:447: BaFBr storage phosphors, DQE(0) about 0.25-0.35, MTF about
  0.1-0.2 at 3-3.5 cycles/mm.
* [B12] Bushberg J.T., Seibert J.A., Leidholdt E.M., Boone J.M. (2012), *The Essential Physics of Medical
  Imaging*, 3rd ed.: anti-scatter grids (ratio 10-12: primary transmission about 0.7, scatter transmission
  0.1-0.15), image intensifiers (limiting resolution about 2 cycles/mm in a 23 cm field, vignetting),
  heel effect, anode angles 7-20 degrees (12-16 in radiography).
* [VS94] Vuylsteke P., Schoeters E. (1994), *Multiscale image contrast amplification (MUSICA)*, Proc SPIE
  2167:551: the console's multi-scale processing; vendors' strengths are not published, the processing
  values of the presets are typical looks, not measurements.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

import numpy as np

from ct2x.drr.spectrum import KVP_RANGE
from ct2x.errors import CT2XError
from ct2x.geometry import CArm
from ct2x.options import IMAGING_RANDOMISED, MAX_DEVICES

#: Where the anode lies in the image (its side of the field is the dimmer one).
ANODE_SIDES = ("top", "bottom", "left", "right")
#: Side markers (lead letters in the beam; ``""``: none) and the corners they may sit in.
MARKERS = ("", "L", "R")
MARKER_CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")
#: Band centres of :attr:`ImagingParameters.band_gains`: structures of 1-2, 2-4, ... 32-64 mm.
BAND_SCALES_MM = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
#: The fewest and most points of :attr:`ImagingParameters.tone_points` (besides none).
TONE_POINTS_RANGE = (2, 257)


def _real(name: str, value: object, low: float, high: float, unit: str, *, open_low: bool = False) -> float:
    """``value`` as a float in ``[low, high]`` (``(low, high]`` with ``open_low``), else a one-line CT2XError."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low < value if open_low else low <= value) and value <= high
    if not ok:
        bracket = "(" if open_low else "["
        raise CT2XError(f"the imaging parameter {name} must be a number in {bracket}{low:g}, {high:g}] {unit}, "
                        f"got {value!r}")  # fmt: skip
    return float(value)


def _choice(name: str, value: object, choices: tuple) -> object:
    if value not in choices:
        raise CT2XError(f"the imaging parameter {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise CT2XError(f"the imaging parameter {name} must be True or False, got {value!r}")
    return bool(value)


def _reals(name: str, values: object, count: int, low: float, high: float, unit: str, **kw: bool) -> tuple:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) != count:
        raise CT2XError(f"the imaging parameter {name} must be {count} numbers in {unit}, got {values!r}")
    return tuple(_real(name, v, low, high, unit, **kw) for v in values)


def _tone_points(values: object) -> tuple[float, ...]:
    """``()`` or 2-257 non-decreasing numbers in [0, 1] (:attr:`ImagingParameters.tone_points`)."""
    fewest, most = TONE_POINTS_RANGE
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or not (
            len(values) == 0 or fewest <= len(values) <= most):  # fmt: skip
        raise CT2XError(f"the imaging parameter tone_points must be () or {fewest}-{most} numbers in [0, 1], "
                        f"got {values!r}")  # fmt: skip
    points = tuple(_real("tone_points", v, 0.0, 1.0, "") for v in values)
    if any(b < a for a, b in zip(points, points[1:], strict=False)):
        raise CT2XError(f"the imaging parameter tone_points must be non-decreasing (a monotone tone curve), "
                        f"got {values!r}")  # fmt: skip
    return points


@dataclass(frozen=True)
class ImagingParameters:
    """Every parameter of the imaging chain (:func:`ct2x.imaging.simulate`). The defaults are the
    ``chest_dr_pa`` preset. Values are checked (and normalised) on construction; a bad one is a
    one-line :class:`ct2x.errors.CT2XError`.

    Tube and beam:
        kvp: tube voltage, kVp (whole, 30-300: SpekPy's range); with ``aluminium_mm`` it names the DRR
            spectrum (:attr:`spectrum`, e.g. ``125KV_AL30``).
        aluminium_mm: total filtration, mm Al (rounded to 0.1 mm).
        mas: tube load of the exposure (or of one fluoroscopy pulse), mAs.
        anode_angle_deg: target angle, degrees (heel effect).
        anode_side: where the anode lies in the image: ``top``, ``bottom``, ``left`` or ``right``.
        focal_spot_mm: nominal focal spot size (IEC 60336), mm; 0 for an ideal point source.
        collimation: fractions of the detector's height or width shuttered at the (top, bottom, left, right).
        circular_field: the round input field of an image intensifier (the circle inscribed in the detector).
    Scatter and grid:
        scatter_scale: multiplies the scatter model's amplitude (1: the model; 0: no scatter).
        grid_primary_transmission, grid_scatter_transmission: anti-scatter grid's Tp and Ts (1 and 1: no grid).
    Detector:
        pixel_pitch_mm: the detector's element pitch, mm (its Nyquist frequency is ``1 / (2 pitch)``).
        mtf_nyquist: the detector's MTF at that Nyquist frequency.
        efficiency: quantum detection efficiency, the DQE(0)-like fraction of the photons that count.
        electronic_noise: additive electronic noise of one detector element, standard deviation in quanta.
        structure_noise: the relative standard deviation of the detector's fixed gain pattern per readout
            pixel before the detector blur (CR granularity, a flat panel's residual; 0: none): noise whose
            variance grows with the signal squared (:mod:`ct2x.imaging.detector`).
        gain_calibrated: the flat field divides out the beam's non-uniformity (flat panels; not CR or an II).
        vignetting: fractional brightness loss at the field's edge (image intensifiers), 0-0.5.
    Console (processing of the log image):
        band_gains: gains of the six octave bands centred on :data:`BAND_SCALES_MM` (1: unchanged).
        residual_gain: gain of what is coarser than 64 mm (below 1 compresses the latitude).
        compression: exponent of the band amplitudes above ``compression_scale`` (1: linear; MUSICA ~0.7).
        compression_scale: the band amplitude where compression starts, in log units.
        unsharp_amount, unsharp_radius_mm: unsharp masking ``x + a (x - G_r * x)``.
        window_percentiles: the (low, high) percentiles of the field's log values mapped to black and white.
        tone_contrast: steepness of the sigmoid tone curve through mid-grey (0: linear).
        tone_points: a monotone tone curve after the sigmoid: the display values (non-decreasing, in [0, 1])
            at 2-257 evenly spaced inputs from 0 to 1, linear between them (:func:`ct2x.imaging.fit.fit_style`
            fits them to a film's histogram); ``()`` (the default): the identity.
        bits: bit depth of the stored image.
        marker, marker_corner: a lead side marker (``"L"``, ``"R"`` or ``""``) and its corner.
    Support devices in the beam (:mod:`ct2x.imaging.devices`):
        devices: how many ECG leads (with their electrodes), central venous catheters and feeding tubes lie on
            and in the patient, 0-:data:`MAX_DEVICES` (0: none, every preset's default).
        devices_seed: which devices and where (one draw for every view of a series).
    """

    kvp: int = 125
    aluminium_mm: float = 3.0
    mas: float = 2.0
    anode_angle_deg: float = 12.0
    anode_side: str = "top"
    focal_spot_mm: float = 1.2
    collimation: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    circular_field: bool = False
    scatter_scale: float = 1.0
    grid_primary_transmission: float = 0.70
    grid_scatter_transmission: float = 0.12
    pixel_pitch_mm: float = 0.148
    mtf_nyquist: float = 0.2
    efficiency: float = 0.65
    electronic_noise: float = 2.0
    structure_noise: float = 0.0
    gain_calibrated: bool = True
    vignetting: float = 0.0
    band_gains: tuple[float, ...] = (1.6, 1.9, 1.8, 1.4, 1.1, 1.0)
    residual_gain: float = 0.45
    compression: float = 0.7
    compression_scale: float = 0.1
    unsharp_amount: float = 0.3
    unsharp_radius_mm: float = 1.0
    window_percentiles: tuple[float, float] = (0.5, 99.5)
    tone_contrast: float = 5.0
    tone_points: tuple[float, ...] = ()
    bits: int = 12
    marker: str = "L"
    marker_corner: str = "top-right"
    devices: int = 0
    devices_seed: int = 0

    def __post_init__(self) -> None:
        checked = {**self._beam(), **self._detector(), **self._console(), **self._devices()}
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def _beam(self) -> dict[str, object]:
        kvp = _real("kvp", self.kvp, *KVP_RANGE, "kV (SpekPy's range)")
        if kvp != round(kvp):
            raise CT2XError(f"the imaging parameter kvp must be a whole number of kV, got {self.kvp!r}")
        aluminium = round(_real("aluminium_mm", self.aluminium_mm, 0.0, 50.0, "mm Al"), 1)
        tp = _real("grid_primary_transmission", self.grid_primary_transmission, 0.0, 1.0, "", open_low=True)
        ts = _real("grid_scatter_transmission", self.grid_scatter_transmission, 0.0, 1.0, "")
        if ts > tp:
            raise CT2XError(f"the grid's scatter transmission ({ts:g}) exceeds its primary transmission ({tp:g}): "
                            "a grid passes more primary than scatter (no grid: both 1)")  # fmt: skip
        return {
            "kvp": int(kvp), "aluminium_mm": aluminium,
            "mas": _real("mas", self.mas, 0.0, 10_000.0, "mAs", open_low=True),
            "anode_angle_deg": _real("anode_angle_deg", self.anode_angle_deg, 1.0, 45.0, "degrees"),
            "anode_side": _choice("anode_side", self.anode_side, ANODE_SIDES),
            "focal_spot_mm": _real("focal_spot_mm", self.focal_spot_mm, 0.0, 5.0, "mm"),
            "collimation": _reals("collimation", self.collimation, 4, 0.0, 0.45, "fractions of the detector side"),
            "circular_field": _flag("circular_field", self.circular_field),
            "scatter_scale": _real("scatter_scale", self.scatter_scale, 0.0, 10.0, ""),
            "grid_primary_transmission": tp, "grid_scatter_transmission": ts,
        }  # fmt: skip

    def _detector(self) -> dict[str, object]:
        return {
            "pixel_pitch_mm": _real("pixel_pitch_mm", self.pixel_pitch_mm, 0.01, 5.0, "mm"),
            "mtf_nyquist": _real("mtf_nyquist", self.mtf_nyquist, 0.0, 1.0, "", open_low=True),
            "efficiency": _real("efficiency", self.efficiency, 0.0, 1.0, "", open_low=True),
            "electronic_noise": _real("electronic_noise", self.electronic_noise, 0.0, 1e6, "quanta"),
            "structure_noise": _real("structure_noise", self.structure_noise, 0.0, 0.5, ""),
            "gain_calibrated": _flag("gain_calibrated", self.gain_calibrated),
            "vignetting": _real("vignetting", self.vignetting, 0.0, 0.5, ""),
        }

    def _console(self) -> dict[str, object]:
        gains = _reals("band_gains", self.band_gains, len(BAND_SCALES_MM), 0.0, 20.0, "", open_low=True)
        low, high = _reals("window_percentiles", self.window_percentiles, 2, 0.0, 100.0, "percent")
        if not low < high:
            raise CT2XError(f"the imaging parameter window_percentiles must be (low, high) with low < high, "
                            f"got {self.window_percentiles!r}")  # fmt: skip
        if isinstance(self.bits, bool) or not isinstance(self.bits, numbers.Integral) or not 1 <= self.bits <= 16:
            raise CT2XError(f"the imaging parameter bits must be a whole number of bits in [1, 16], got {self.bits!r}")
        return {
            "band_gains": gains,
            "residual_gain": _real("residual_gain", self.residual_gain, 0.0, 20.0, "", open_low=True),
            "compression": _real("compression", self.compression, 0.0, 1.0, "", open_low=True),
            "compression_scale": _real("compression_scale", self.compression_scale, 0.0, 100.0, "", open_low=True),
            "unsharp_amount": _real("unsharp_amount", self.unsharp_amount, 0.0, 20.0, ""),
            "unsharp_radius_mm": _real("unsharp_radius_mm", self.unsharp_radius_mm, 0.0, 100.0, "mm", open_low=True),
            "window_percentiles": (low, high),
            "tone_contrast": _real("tone_contrast", self.tone_contrast, 0.0, 50.0, ""),
            "tone_points": _tone_points(self.tone_points),
            "bits": int(self.bits),
            "marker": _choice("marker", self.marker, MARKERS),
            "marker_corner": _choice("marker_corner", self.marker_corner, MARKER_CORNERS),
        }

    def _devices(self) -> dict[str, object]:
        for name, high in (("devices", MAX_DEVICES), ("devices_seed", 2**63 - 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value <= high:
                raise CT2XError(f"the imaging parameter {name} must be a whole number in [0, {high}], got {value!r}")
        return {"devices": int(self.devices), "devices_seed": int(self.devices_seed)}

    @property
    def spectrum(self) -> str:
        """The tube spectrum's name for :mod:`ct2x.drr.spectrum`, e.g. ``"125KV_AL30"``."""
        return f"{self.kvp}KV_AL{round(self.aluminium_mm * 10)}"

    def unprocessed(self) -> ImagingParameters:
        """These parameters with the console's processing off: unit band and residual gains, no
        compression or unsharp masking, the full range as the window and a linear tone curve (no tone
        points), no collimation, marker or circular field; the display is then the log image min-max scaled."""
        return dataclasses.replace(
            self, band_gains=(1.0,) * len(BAND_SCALES_MM), residual_gain=1.0, compression=1.0, unsharp_amount=0.0,
            window_percentiles=(0.0, 100.0), tone_contrast=0.0, tone_points=(), marker="", collimation=(0.0,) * 4,
            circular_field=False,
        )  # fmt: skip


@dataclass(frozen=True)
class Preset:
    """A real imaging chain: its :class:`ImagingParameters` and the geometry it is used at.

    Attributes:
        name: the key of :data:`PRESETS`.
        description: one line: device, exam, and the sources of the values.
        parameters: the chain's parameters.
        sid_mm, sdd_mm: source-to-isocentre and source-to-detector distances, mm.
        field_mm: the detector's (height, width), mm.
    """

    name: str
    description: str
    parameters: ImagingParameters
    sid_mm: float
    sdd_mm: float
    field_mm: tuple[float, float]

    def view(self, pixels: int = 512, primary: float = 0.0, secondary: float = 0.0,
             isocenter: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> CArm:  # fmt: skip
        """A :class:`CArm` of this geometry, its detector read out at ``pixels`` on the longer side."""
        height, width = self.field_mm
        spacing = max(height, width) / pixels
        shape = (max(1, round(height / spacing)), max(1, round(width / spacing)))
        return CArm(primary, secondary, self.sdd_mm, self.sid_mm, shape, (spacing, spacing), isocenter)


#: The tube of both mobile C-arms: a saved fluoroscopy image (last-image-hold of 3 pulses of 0.1 mAs averaged,
#: about 50 nGy a pulse at the detector behind 20 cm of water), 0.6 mm focal spot [IEC], no side marker.
_CARM_TUBE = {"kvp": 70, "aluminium_mm": 3.5, "mas": 0.3, "anode_angle_deg": 12.0, "anode_side": "left",
              "focal_spot_mm": 0.6, "marker": ""}  # fmt: skip

#: The presets by name. Geometry: DeepDRR's mobile C-arm (SID 530 mm, SDD 1020 mm) for both C-arms.
PRESETS: dict[str, Preset] = {
    "mobile_carm_flat_panel": Preset(
        "mobile_carm_flat_panel",
        "mobile C-arm, CsI/a-Si flat panel (DeepDRR's 1536 x 0.194 mm, 298 mm), a saved fluoroscopy image of 70 kVp, "
        "3.5 mm Al, 3 x 0.1 mAs, 0.6 mm focus [IEC]; grid r = 10 (Tp 0.70, Ts 0.15) [B12]; MTF 0.25 at 2.6 "
        "cycles/mm, DQE(0) 0.65, electronic noise 3 quanta [SF03]; mild processing",
        ImagingParameters(
            **_CARM_TUBE,
            grid_primary_transmission=0.70,
            grid_scatter_transmission=0.15,
            pixel_pitch_mm=0.194,
            mtf_nyquist=0.25,
            efficiency=0.65,
            electronic_noise=3.0,
            band_gains=(1.3, 1.4, 1.3, 1.1, 1.0, 1.0),
            residual_gain=0.7,
            compression=0.8,
            unsharp_amount=0.4,
            tone_contrast=3.0,
        ),
        sid_mm=530.0,
        sdd_mm=1020.0,
        field_mm=(298.0, 298.0),
    ),
    "mobile_carm_image_intensifier": Preset(
        "mobile_carm_image_intensifier",
        "mobile C-arm, 23 cm (9 inch) image intensifier and 1k CCD (0.23 mm at the input), the C-arm tube above; "
        "grid r = 8 (Tp 0.72, Ts 0.2), MTF 0.1 at 2.2 cycles/mm, DQE(0) 0.6, vignetting 25 %, round field, no "
        "flat-field correction [B12]; video edge enhancement, 8 bits",
        ImagingParameters(
            **_CARM_TUBE,
            circular_field=True,
            grid_primary_transmission=0.72,
            grid_scatter_transmission=0.2,
            pixel_pitch_mm=0.23,
            mtf_nyquist=0.1,
            efficiency=0.6,
            electronic_noise=1.0,
            gain_calibrated=False,
            vignetting=0.25,
            band_gains=(1.2, 1.2, 1.0, 1.0, 1.0, 1.0),
            residual_gain=1.0,
            compression=1.0,
            unsharp_amount=0.6,
            unsharp_radius_mm=1.5,
            tone_contrast=4.0,
            bits=8,
        ),
        sid_mm=530.0,
        sdd_mm=1020.0,
        field_mm=(230.0, 230.0),
    ),
    "chest_dr_pa": Preset(
        "chest_dr_pa",
        "chest PA on a CsI flat-panel stand at 180 cm: 125 kVp, 3 mm Al, 2 mAs, 1.2 mm focus, 12 degree anode, grid "
        "r = 12 (Tp 0.70, Ts 0.12) [EUR, B12]; 0.148 mm pitch, MTF 0.2 at 3.4 cycles/mm, DQE(0) 0.65, electronic "
        "noise 2 quanta [SF03]; strong multi-scale processing [VS94], 12 bits",
        ImagingParameters(),
        sid_mm=1650.0,
        sdd_mm=1800.0,
        field_mm=(430.0, 430.0),
    ),
    "bedside_cr_ap": Preset(
        "bedside_cr_ap",
        "bedside chest AP on a 35 x 43 cm CR cassette at 110 cm, no grid: 85 kVp, 3 mm Al, 2.5 mAs, 1.2 mm focus "
        "[IEC], 16 degree anode [B12]; 0.15 mm pixels, MTF 0.15 at 3.3 cycles/mm, DQE(0) 0.3 [SF02]; heel effect not "
        "corrected; MUSICA-like processing [VS94], collimated, 12 bits",
        ImagingParameters(
            kvp=85,
            mas=2.5,
            anode_angle_deg=16.0,
            grid_primary_transmission=1.0,
            grid_scatter_transmission=1.0,
            pixel_pitch_mm=0.15,
            mtf_nyquist=0.15,
            efficiency=0.3,
            electronic_noise=3.0,
            gain_calibrated=False,
            band_gains=(1.5, 1.7, 1.6, 1.3, 1.1, 1.0),
            residual_gain=0.5,
            compression=0.6,
            unsharp_amount=0.2,
            tone_contrast=4.0,
            collimation=(0.04, 0.06, 0.05, 0.05),
            marker="R",
            marker_corner="top-left",
        ),
        sid_mm=960.0,
        sdd_mm=1100.0,
        field_mm=(430.0, 350.0),
    ),
}


def resolve(parameters: str | ImagingParameters) -> ImagingParameters:
    """A preset's name (a key of :data:`PRESETS`) or parameters -> the parameters."""
    if isinstance(parameters, ImagingParameters):
        return parameters
    if isinstance(parameters, str) and parameters in PRESETS:
        return PRESETS[parameters].parameters
    raise CT2XError(f"unknown imaging preset {parameters!r}: use one of {', '.join(PRESETS)} or ImagingParameters")


#: The published or typical range of each drawn parameter (see the module's sources): ``(low, high)`` for
#: a uniform draw, a tuple of choices for a choice. mAs and the electronic noise are drawn log-uniformly.
RANGES: dict[str, tuple] = {
    "kvp": (60, 125), "aluminium_mm": (2.5, 5.0), "mas": (0.05, 10.0), "anode_angle_deg": (10.0, 16.0),
    "anode_side": ANODE_SIDES, "focal_spot_mm": (0.3, 1.3), "collimation": (0.0, 0.12),
    "scatter_scale": (0.7, 1.3), "grid_primary_transmission": (0.6, 0.8), "grid_scatter_transmission": (0.05, 0.2),
    "pixel_pitch_mm": (0.1, 0.3), "mtf_nyquist": (0.08, 0.45), "efficiency": (0.25, 0.75),
    "electronic_noise": (0.5, 10.0), "structure_noise": (0.0, 0.02), "vignetting": (0.0, 0.3),
    "fine_band_gains": (1.0, 2.5),
    "coarse_band_gains": (0.8, 1.6), "residual_gain": (0.3, 1.0), "compression": (0.5, 1.0),
    "compression_scale": (0.03, 0.3), "unsharp_amount": (0.0, 1.5), "unsharp_radius_mm": (0.5, 3.0),
    "window_low": (0.0, 2.0), "window_high": (98.0, 100.0), "tone_contrast": (0.0, 8.0), "bits": (8, 10, 12, 14),
    "marker": MARKERS, "marker_corner": MARKER_CORNERS, "devices": (0, 6),
}  # fmt: skip


def chosen(imaging: str, seed: int | None = None, devices: int | None = None) -> ImagingParameters:
    """The parameters of an imaging choice of ``ct2x drr --imaging`` and the Slicer panel: a preset's name (a key
    of :data:`PRESETS`), or :data:`ct2x.options.IMAGING_RANDOMISED` (:func:`randomised` from ``seed``); with
    ``devices`` (``--devices``), that many support devices drawn with ``seed`` (0 without one), the same in every
    view; ``None`` keeps the choice's own (none in a preset, the randomised draw's)."""
    if imaging == IMAGING_RANDOMISED:
        if seed is None:
            raise CT2XError("the randomised imaging chain draws its parameters from the seed: give one")
        parameters = randomised(seed)
    else:
        parameters = resolve(imaging)
    if devices is None:
        return parameters
    return dataclasses.replace(parameters, devices=devices, devices_seed=seed or 0)


def randomised(seed: int) -> ImagingParameters:
    """Parameters with every value drawn from its range in :data:`RANGES` (domain randomisation), reproducibly
    from ``seed``. kVp is drawn in 5 kV steps, filtration in 0.5 mm and the anode angle in whole degrees, so
    that the cached tube spectra are reused; half the draws have a grid, half collimation, 30 % are
    uncorrected (CR or image intensifier: heel effect and vignetting stay), 15 % have a round field, and 0-6
    support devices lie in the beam."""
    rng = np.random.default_rng(seed)

    def uniform(name: str) -> float:
        return float(rng.uniform(*RANGES[name]))

    def log_uniform(name: str) -> float:
        low, high = RANGES[name]
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))

    def pick(name: str) -> object:
        choices = RANGES[name]
        return choices[int(rng.integers(len(choices)))]

    grid = rng.random() < 0.5
    uncorrected = rng.random() < 0.3
    return ImagingParameters(
        kvp=5 * round(uniform("kvp") / 5), aluminium_mm=0.5 * round(2 * uniform("aluminium_mm")),
        mas=log_uniform("mas"), anode_angle_deg=float(round(uniform("anode_angle_deg"))),
        anode_side=pick("anode_side"), focal_spot_mm=uniform("focal_spot_mm"),
        collimation=tuple(uniform("collimation") for _ in range(4)) if rng.random() < 0.5 else (0.0,) * 4,
        circular_field=bool(rng.random() < 0.15), scatter_scale=uniform("scatter_scale"),
        grid_primary_transmission=uniform("grid_primary_transmission") if grid else 1.0,
        grid_scatter_transmission=uniform("grid_scatter_transmission") if grid else 1.0,
        pixel_pitch_mm=uniform("pixel_pitch_mm"), mtf_nyquist=uniform("mtf_nyquist"),
        efficiency=uniform("efficiency"), electronic_noise=log_uniform("electronic_noise"),
        gain_calibrated=not uncorrected, vignetting=uniform("vignetting") if uncorrected else 0.0,
        band_gains=tuple(uniform("fine_band_gains") for _ in range(3)) + tuple(
            uniform("coarse_band_gains") for _ in range(3)),
        residual_gain=uniform("residual_gain"), compression=uniform("compression"),
        compression_scale=log_uniform("compression_scale"), unsharp_amount=uniform("unsharp_amount"),
        unsharp_radius_mm=uniform("unsharp_radius_mm"),
        window_percentiles=(uniform("window_low"), uniform("window_high")), tone_contrast=uniform("tone_contrast"),
        bits=int(pick("bits")), marker=pick("marker"), marker_corner=pick("marker_corner"),
        structure_noise=uniform("structure_noise"),
        devices=int(rng.integers(RANGES["devices"][0], RANGES["devices"][1] + 1)),
        devices_seed=int(rng.integers(2**31)),
    )  # fmt: skip
