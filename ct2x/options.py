"""The run options of the ``ct2x`` verbs: validated dataclasses, importable without torch.

One class per verb holds its options and their defaults; ``__post_init__`` refuses, in one line naming the
command-line option (and the field, where its name differs), every value the run could not use, so the command
line, the Python API and the Slicer modules get the same checks. The command line (:mod:`ct2x.cli`) builds its
arguments from the fields: the default from the field, the help text from ``metadata["help"]`` (argparse's
``%(default)s`` placeholders allowed) and the flag from ``metadata["option"]`` (else ``--`` and the field name
with dashes); the Slicer panels take their defaults from the same fields.

* ``ct2x drr``: :class:`DRROptions`;
* ``ct2x prepare``: :class:`PrepareOptions` (the run) and :class:`ct2x.data.prepare.PrepareSettings` (what the
  dataset holds, also torch-free, beside its job);
* ``ct2x train``: :class:`TrainOptions` (the model and losses: :class:`ct2x.config.CT2XConfig`, by default the
  preset :data:`DEFAULT_PRESET`);
* ``ct2x synthesize``: :class:`SynthesizeOptions`;
* ``ct2x evaluate``: :class:`EvaluationSettings`.

Units: angles in degrees, distances and pixel spacings in mm, ray steps in voxels, photons per pixel, intervals
in optimisation steps.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ct2x.errors import CT2XError, positive_finite
from ct2x.geometry import DEFAULT_DETECTOR_PIXELS, DEFAULT_PIXEL_MM, DEFAULT_SDD_MM, DEFAULT_SID_MM

#: Primary angles (degrees) of ``ct2x drr``, ``ct2x prepare`` and ``ct2x synthesize``: the paper's five views.
DEFAULT_ANGLES = (-60.0, -30.0, 0.0, 30.0, 60.0)
#: Ray-marching step of the physics DRRs, in voxels of the CT as read (the paper's 0.1).
DEFAULT_STEP_VOXELS = 0.1
#: Tube spectrum of the physics DRRs: 60 kVp with 3.5 mm aluminium filtration (DeepDRR's default).
DEFAULT_SPECTRUM = "60KV_AL35"
#: Photons per detector pixel of the Poisson noise (0: noise-free).
DEFAULT_PHOTONS = 1e6
#: The device of every verb: ``cuda`` when torch sees a CUDA GPU, else ``cpu`` (:func:`ct2x.device.torch_device`).
DEFAULT_DEVICE = "auto"
#: The config preset ``ct2x train`` and the Training panel use: it needs a dataset with projection images,
#: which ``ct2x prepare`` stores by default (:attr:`ct2x.data.prepare.PrepareSettings.projections`).
DEFAULT_PRESET = "projected"
#: The DRR renderers (``ct2x.drr.render.BACKENDS``, named here without importing torch).
RENDER_BACKENDS = ("numba", "torch", "deepdrr", "auto")
#: The files ``ct2x synthesize`` can write per view.
SYNTHESIS_FORMATS = ("png", "nrrd", "dcm")
#: The presets of the imaging chain (``ct2x.imaging.PRESETS``, named here without importing torch).
IMAGING_PRESETS = ("mobile_carm_flat_panel", "mobile_carm_image_intensifier", "chest_dr_pa", "bedside_cr_ap")
#: ``ct2x drr --imaging``: every parameter of the chain drawn from its published range (``--seed``).
IMAGING_RANDOMISED = "randomised"
#: ``ct2x drr --imaging``: the physics DRR alone (``-log``, ``--spectrum``, ``--photons``), no imaging chain.
IMAGING_RAW = "raw"
#: The most support devices ``ct2x drr --devices`` (``ct2x.imaging.ImagingParameters.devices``) puts in the beam.
MAX_DEVICES = 20
#: What ``ct2x drr --imaging`` takes.
IMAGING_MODES = (*IMAGING_PRESETS, IMAGING_RANDOMISED, IMAGING_RAW)
#: ``ct2x drr``'s default: the chain of the default C-arm geometry (DeepDRR's mobile C-arm, a flat panel).
DEFAULT_IMAGING = "mobile_carm_flat_panel"

_BACKEND_HELP = (
    "DRR renderer: numba (compiled CPU kernel), torch (CPU or CUDA), deepdrr (DeepDRR on a CUDA GPU) or auto: "
    "on the CPU numba (torch if numba is missing), on a GPU DeepDRR when installed, else torch (default: %(default)s)"
)
_ISOCENTER_HELP = "isocenter in the CT's LPS space, mm (default: the centre of the CT's bounding box)"
_CT_HELP = "CT: NIfTI, NRRD, MHA/MHD file or a DICOM series folder"
#: The help of ``--remove-table`` (``ct2x drr``, ``ct2x synthesize``, ``ct2x prepare``).
REMOVE_TABLE_HELP = (
    "make everything outside the patient's body air before rendering: the CT couch, its pads and straps, which "
    "no radiograph shows and which cast bright bands beside the body in oblique and lateral views of a wide "
    "field (ct2x.body; a body part apart from the trunk over the whole scan goes too: leave it off for "
    "phantoms and scans cropped inside the body)"
)


def _help(text: str, option: str | None = None) -> dict[str, str]:
    """A field's metadata: its help text, and its command-line flag when not ``--`` + the field name with dashes."""
    return {"help": text} if option is None else {"help": text, "option": option}


def angles_help(or_like: str = "") -> str:
    """The help of ``--angles``; ``or_like`` names a source of angles tried before the default."""
    shown = " ".join(f"{a:g}" for a in DEFAULT_ANGLES)
    return f"primary angles, LAO + / RAO -, about the patient's superior axis (default: {or_like}{shown}, the paper's)"


def secondary_help(or_like: str = "") -> str:
    """The help of ``--secondary``; ``or_like`` as in :func:`angles_help`."""
    return f"secondary angles, CRAN + / CAUD -: one for all views or one per view (default: {or_like}0)"


def option_flag(options: type, name: str) -> str | None:
    """The command-line flag of field ``name`` of the options class ``options``, e.g. ``--checkpoint-every``;
    None for a field the command line does not set (one without a help text)."""
    metadata = _fields(options)[name].metadata
    if "help" not in metadata:
        return None
    return metadata.get("option", "--" + name.replace("_", "-"))


def option_label(options: type, name: str) -> str:
    """Field ``name`` as messages name it: its flag, with the field's name where that differs
    (``--grid (grid_size)``); the bare name for a field the command line does not set."""
    flag = option_flag(options, name)
    if flag is None:
        return name
    return flag if flag == f"--{name}" else f"{flag} ({name})"


def option_default(options: type, name: str) -> Any:
    """The default of field ``name`` of ``options`` (made by its factory where it has one)."""
    spec = _fields(options)[name]
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    if spec.default is dataclasses.MISSING:
        raise KeyError(f"{options.__name__}.{name} has no default")
    return spec.default


def _fields(options: type) -> dict[str, dataclasses.Field]:
    """The fields of the dataclass ``options`` by name."""
    return {spec.name: spec for spec in dataclasses.fields(options)}


def is_whole(value: object) -> bool:
    """An integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """A real number, not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _at_least(options: object, name: str, low: int, extra: str = "") -> None:
    """Refuse field ``name`` of ``options`` unless it is a whole number >= ``low`` (``extra``: what else it may be)."""
    value = getattr(options, name)
    if not is_whole(value) or value < low:
        raise CT2XError(f"{option_label(type(options), name)} must be at least {low}{extra}, got {value!r}")


def _one_of(options: object, name: str, choices: tuple[str, ...]) -> None:
    """Refuse field ``name`` of ``options`` unless it is one of ``choices``."""
    value = getattr(options, name)
    if value not in choices:
        raise CT2XError(f"{option_label(type(options), name)} must be one of {', '.join(choices)}, got {value!r}")


def _photons(options: object) -> None:
    """Refuse a photon count that is not a finite number >= 0."""
    value = options.photons
    if not is_real(value) or not 0 <= value < math.inf:
        raise CT2XError(f"{option_label(type(options), 'photons')} must be positive, or 0 for no noise; got {value!r}")


def _angles(options: object, name: str, required: bool = True) -> None:
    """Refuse angles that are not one or more finite numbers (``None`` passes unless ``required``)."""
    values = getattr(options, name)
    if values is None and not required:
        return
    label = option_label(type(options), name)
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) == 0:
        raise CT2XError(f"{label} must be one or more angles in degrees, got {values!r}")
    for value in values:
        if not is_real(value) or not math.isfinite(value):
            raise CT2XError(f"{label} must be angles in degrees, got {value!r}")


def _pair(options: object, name: str) -> tuple:
    """Field ``name`` (one value: square, or two: rows columns) as a (row, column) pair."""
    values = getattr(options, name)
    label = option_label(type(options), name)
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) not in (1, 2):
        count = len(values) if hasattr(values, "__len__") else values
        raise CT2XError(f"{label} takes one value (square) or two (rows columns), got {count}")
    return (values[0], values[-1])


def _detector(options: object) -> None:
    """Refuse a ``detector_size`` given that is not one or two (rows columns) whole pixel counts >= 1, and a
    ``pixel_mm`` given that is not one or two positive spacings in mm (``None``: the preset's)."""
    for name in ("detector_size", "pixel_mm"):
        if getattr(options, name) is None:
            continue
        label = option_label(type(options), name)
        for value in _pair(options, name):
            if name == "detector_size" and (not is_whole(value) or value < 1):
                raise CT2XError(f"{label} must be whole numbers of pixels >= 1, got {value!r}")
            if name == "pixel_mm" and (not is_real(value) or not 0 < value < math.inf):
                raise CT2XError(f"{label} must be positive spacings in mm, got {value!r}")


def _formats(text: str) -> set[str]:
    """The formats named in ``text`` (comma-separated); a CT2XError unless all are :data:`SYNTHESIS_FORMATS`."""
    formats = {f.strip() for f in str(text).split(",") if f.strip()}
    if not formats or formats - set(SYNTHESIS_FORMATS):
        raise CT2XError(f"--format takes png, nrrd and/or dcm separated by commas, got {text!r}")
    return formats


def default_prepare_workers() -> int:
    """CTs prepared at once by default: one per CPU, at most 4 (each process renders one CT)."""
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class DRROptions:
    """``ct2x drr``: radiographs (or raw DRRs) of one CT at C-arm views, written to ``out`` (LPS, mm, degrees, voxels).

    ``imaging`` is one of :data:`IMAGING_MODES`: a preset of the imaging chain (``ct2x.imaging.PRESETS``),
    ``randomised`` (every chain parameter drawn from its range with ``seed``) or ``raw`` (the physics DRR:
    ``-log`` of the transmitted fraction with ``spectrum`` and ``photons``). The geometry fields left ``None``
    take the preset's geometry (``randomised`` and ``raw``: DeepDRR's mobile C-arm): ``ct2x.imaging.render.
    chain_geometry`` resolves them; a detector given by ``detector_size`` or ``pixel_mm`` alone keeps its field.
    ``spectrum`` and ``photons`` are ``raw``'s only (``None``: :data:`DEFAULT_SPECTRUM`, :data:`DEFAULT_PHOTONS`):
    the chain's tube and noise come from its parameters (kVp, filtration, mAs, detector).
    """

    ct: Path = field(metadata=_help(_CT_HELP))
    out: Path = field(default=Path("ct2x_drr"), metadata=_help("output folder (default: %(default)s)"))
    series: str | None = field(
        default=None, metadata=_help("DICOM series instance UID, when the folder holds several series")
    )
    remove_table: bool = field(default=False, metadata=_help(REMOVE_TABLE_HELP))
    imaging: str = field(
        default=DEFAULT_IMAGING,
        metadata=_help(
            "how each view is made: a preset of a real imaging chain (scatter, blur, noise from the dose, the "
            "detector's log and the console's processing: a radiograph), randomised, or raw (the physics DRR); "
            "the choices are listed below (default: %(default)s)"
        ),
    )
    style: Path | None = field(
        default=None,
        metadata=_help(
            "a reference radiograph (PNG, JPEG, DICOM) whose look the imaging chain takes: its tone curve, band "
            "contrast, dose and detector sharpness are fitted to the film (a few seconds, no learning) over the "
            "AP, oblique and lateral views of the first view's geometry, starting from the --imaging preset (or "
            "the randomised draw); every view then uses them"
        ),
    )
    devices: int | None = field(
        default=None,
        metadata=_help(
            f"support devices in the beam: N ECG leads with their electrodes, central venous catheters or "
            f"feeding tubes (0-{MAX_DEVICES}) on and in the patient, drawn with --seed, the same in every view, as "
            "on intensive-care films (default: none; randomised: its draw of 0-6)"
        ),
    )
    angles: tuple[float, ...] = field(default=DEFAULT_ANGLES, metadata=_help(angles_help()))
    secondary: tuple[float, ...] = field(default=(0.0,), metadata=_help(secondary_help()))
    sdd: float | None = field(
        default=None,
        metadata=_help(
            f"source-to-detector distance, mm (default: the --imaging preset's; randomised and raw: {DEFAULT_SDD_MM:g})"
        ),
    )
    sid: float | None = field(
        default=None,
        metadata=_help(
            f"source-to-isocenter distance, mm (default: the --imaging preset's; randomised and raw: "
            f"{DEFAULT_SID_MM:g})"
        ),
    )
    detector_size: tuple[int, ...] | None = field(
        default=None,
        metadata=_help(
            f"detector size in pixels: N, or ROWS COLUMNS (default: {DEFAULT_DETECTOR_PIXELS} on the longer side of "
            "the preset's detector); given without --pixel, the pixel spacing follows so that the detector keeps "
            "its size in mm",
            "--size",
        ),
    )
    pixel_mm: tuple[float, ...] | None = field(
        default=None,
        metadata=_help(
            "detector pixel spacing in mm: one value, or ROW COLUMN (default: the preset's detector over --size; "
            f"randomised and raw: 1536 x 0.194 mm / {DEFAULT_DETECTOR_PIXELS} = {DEFAULT_PIXEL_MM:.4g}); given "
            "without --size, the pixel count follows",
            "--pixel",
        ),
    )
    isocenter: tuple[float, float, float] | None = field(default=None, metadata=_help(_ISOCENTER_HELP))
    step: float = field(
        default=DEFAULT_STEP_VOXELS, metadata=_help("ray-marching step in voxels (default: %(default)g)")
    )
    spectrum: str | None = field(
        default=None,
        metadata=_help(
            "--imaging raw only: tube spectrum <kV>KV_AL<mm Al x 10>, e.g. 60KV_AL35 = 60 kVp, 3.5 mm Al (default: "
            f"{DEFAULT_SPECTRUM}); a preset's tube is its kVp and filtration"
        ),
    )
    photons: float | None = field(
        default=None,
        metadata=_help(
            "--imaging raw only: photons per pixel for Poisson noise, 0 renders without noise (default: "
            f"{DEFAULT_PHOTONS:g}); a preset's noise comes from its dose (mAs) and detector"
        ),
    )
    seed: int = field(
        default=0,
        metadata=_help(
            "seed of the noise (view n draws from seed + n) and of the randomised parameters, for repeatable "
            "images (default: %(default)s)"
        ),
    )
    backend: str = field(default="auto", metadata=_help(_BACKEND_HELP))
    device: str | None = field(
        default=DEFAULT_DEVICE, metadata=_help("torch device, e.g. cpu or cuda (default: cuda if available)")
    )

    def __post_init__(self) -> None:
        """Refuse what no view can be rendered with, and raw-only options with the imaging chain; the geometry
        is checked by the C-arm views of the CT."""
        _one_of(self, "imaging", IMAGING_MODES)
        _angles(self, "angles")
        _angles(self, "secondary")
        _detector(self)
        if self.photons is not None:
            _photons(self)
        positive_finite("--step", self.step, "voxels (e.g. 0.1)", quantity="number of")
        _at_least(self, "seed", 0)
        _one_of(self, "backend", RENDER_BACKENDS)
        if self.devices is not None and (not is_whole(self.devices) or not 0 <= self.devices <= MAX_DEVICES):
            raise CT2XError(f"--devices must be a whole number from 0 to {MAX_DEVICES}, got {self.devices!r}")
        if self.imaging == IMAGING_RAW:
            chain_only = {"--style fits the imaging chain's look to a film": self.style,
                          "--devices puts support devices in the imaging chain's beam": self.devices}  # fmt: skip
            for what, given in chain_only.items():
                if given is not None:
                    raise CT2XError(f"{what}: --imaging raw has no chain; drop it, or choose a preset (the default)")
            return
        chain = f"--imaging {self.imaging}"
        if self.photons is not None:
            raise CT2XError(
                f"--photons sets the noise of --imaging raw only: with {chain} the noise comes from the chain's dose "
                "(mAs) and detector (efficiency, electronic noise); drop --photons, or use --imaging raw"
            )
        if self.spectrum is not None:
            raise CT2XError(
                f"--spectrum sets the tube of --imaging raw only: with {chain} the spectrum is the chain's kVp and "
                "filtration; drop --spectrum, or use --imaging raw"
            )
        if self.backend == "deepdrr":
            raise CT2XError(
                f"--backend deepdrr renders raw DRRs only: {chain} needs the per-material area densities, which "
                "the numba or torch marcher gives (--backend auto picks one); or use --imaging raw"
            )

    @property
    def raw_spectrum(self) -> str:
        """The tube spectrum of a raw DRR: ``spectrum``, else :data:`DEFAULT_SPECTRUM`."""
        return DEFAULT_SPECTRUM if self.spectrum is None else self.spectrum

    @property
    def raw_photons(self) -> float:
        """Photons per pixel of a raw DRR's noise (0: none): ``photons``, else :data:`DEFAULT_PHOTONS`."""
        return DEFAULT_PHOTONS if self.photons is None else self.photons


@dataclass(frozen=True)
class PrepareOptions:
    """How ``ct2x prepare`` runs: the CT folder, the dataset folder, processes, device and renderer. What the
    dataset holds (views, sizes, physics) is :class:`ct2x.data.prepare.PrepareSettings`."""

    ct: Path = field(metadata=_help("folder searched recursively for CTs"))
    out: Path = field(metadata=_help("dataset folder (created; extended on re-runs)"))
    workers: int = field(
        default_factory=default_prepare_workers,
        metadata=_help("CTs prepared in parallel, one process each (default: %(default)s)"),
    )
    device: str | None = field(
        default=DEFAULT_DEVICE,
        metadata=_help("torch device for rendering: cpu or cuda (default: cuda if available)"),
    )
    backend: str = field(default="auto", metadata=_help(_BACKEND_HELP))

    def __post_init__(self) -> None:
        """Refuse a worker count below 1 and an unknown renderer."""
        _at_least(self, "workers", 1)
        _one_of(self, "backend", RENDER_BACKENDS)


@dataclass(frozen=True)
class TrainOptions:
    """How to run training (the model and loss settings are in :class:`ct2x.config.CT2XConfig`).

    ``steps`` = total optimisation steps (``None``: the config's epochs over the dataset);
    intervals are in steps; ``workers`` = data-loading processes per training process;
    ``init`` = a trained model (.safetensors) a new run starts from.
    """

    data: Path = field(metadata=_help("dataset folder written by ct2x prepare"))
    xray: Path = field(metadata=_help("folder of real radiographs (PNG, JPEG, DICOM)"))
    out: Path = field(metadata=_help("run folder (checkpoints, logs, the trained model)"))
    steps: int | None = field(default=None, metadata=_help("optimisation steps (default: the config's epochs)"))
    resume: bool = field(default=False, metadata=_help("continue the run in --out from its latest checkpoint"))
    device: str | None = field(
        default=DEFAULT_DEVICE, metadata=_help("cpu, cuda or cuda:N (default: cuda if available)")
    )
    seed: int = field(default=0, metadata=_help("seed of initialisation and data order (default: %(default)s)"))
    checkpoint_every: int = field(default=500, metadata=_help("steps between checkpoints (default: %(default)s)"))
    log_every: int = field(default=10, metadata=_help("steps between logged losses (default: %(default)s)"))
    image_every: int = field(default=100, metadata=_help("steps between image grids (default: %(default)s)"))
    workers: int = field(default=2, metadata=_help("data-loading processes (default: %(default)s)"))
    progress: bool = True
    init: Path | None = field(
        default=None,
        metadata=_help(
            "start a new run from a trained model (.safetensors): layers whose shape matches are copied, the "
            "others (e.g. those a larger --config image_size adds) start fresh"
        ),
    )

    def __post_init__(self) -> None:
        """Refuse step counts and intervals below 1, a negative worker count or seed."""
        if self.steps is not None:
            _at_least(self, "steps", 1, " (or none: the config's epochs)")
        for name in ("checkpoint_every", "log_every", "image_every"):
            _at_least(self, name, 1)
        _at_least(self, "workers", 0, " (0: load in the training process)")
        _at_least(self, "seed", 0)


@dataclass(frozen=True)
class SynthesizeOptions:
    """``ct2x synthesize``: X-rays of one CT with a trained model (``None``: the bundled one), in one style.

    The style is one of ``style`` (a radiograph file), ``drr_style`` (the DRR style of the CT's own DRR at each
    view) and ``model_style`` (a style stored with the model). ``angles``, ``secondary``, ``sdd`` and ``sid``
    default to ``like``'s (a DICOM radiograph's geometry), else to :data:`DEFAULT_ANGLES`, 0 and the model's.
    """

    ct: Path = field(metadata=_help(_CT_HELP))
    out: Path = field(metadata=_help("output folder (must not exist, unless --overwrite)"))
    model: Path | None = field(
        default=None,
        metadata=_help("trained model: .safetensors with its .json card (default: the model bundled with ct2x)"),
    )
    style: Path | None = field(default=None, metadata=_help("style reference radiograph (PNG, JPEG, DICOM)"))
    drr_style: bool = field(default=False, metadata=_help("use the DRR style of the CT's own DRR at each view"))
    model_style: str | None = field(
        default=None,
        metadata=_help("a reference style stored with the model (its card lists them under style_codes, e.g. chest-1)"),
    )
    like: Path | None = field(
        default=None,
        metadata=_help(
            "a DICOM radiograph (DX, CR, XA, RF) whose C-arm geometry to use: positioner angles, source-to-detector "
            "and source-to-patient distances, detector size and pixel spacing (a warning names each missing, "
            "invalid or out-of-range tag and the default used); --angles, --secondary, --sdd and --sid override "
            "its values"
        ),
    )
    angles: tuple[float, ...] | None = field(
        default=None, metadata=_help(angles_help("the --like radiograph's, else "))
    )
    secondary: tuple[float, ...] | None = field(
        default=None, metadata=_help(secondary_help("the --like radiograph's, else "))
    )
    sdd: float | None = field(
        default=None, metadata=_help("source-to-detector distance, mm (default: --like's, else the model's)")
    )
    sid: float | None = field(
        default=None, metadata=_help("source-to-isocenter distance, mm (default: --like's, else the model's)")
    )
    detector_size: tuple[int, ...] | None = field(
        default=None,
        metadata=_help(
            "detector size in pixels: N, or ROWS COLUMNS (default: the model's image size, 256 for the bundled "
            "model, over the model's detector or --like's); given without --pixel, the pixel spacing follows so "
            "that the detector keeps its size in mm. A model with the physics anchor (the bundled one) renders at "
            "any size: the physics, the imaging chain's noise, blur and processing at these pixels, its learned "
            "correction resized to them; other models only at their image size",
            "--size",
        ),
    )
    pixel_mm: tuple[float, ...] | None = field(
        default=None,
        metadata=_help(
            "detector pixel spacing in mm: one value, or ROW COLUMN (default: the detector's size over --size); "
            "given without --size, the pixel count follows",
            "--pixel",
        ),
    )
    isocenter: tuple[float, float, float] | None = field(default=None, metadata=_help(_ISOCENTER_HELP))
    series: str | None = field(default=None, metadata=_help("DICOM series instance UID, when the folder holds several"))
    remove_table: bool = field(default=False, metadata=_help(REMOVE_TABLE_HELP))
    format: str = field(
        default=",".join(SYNTHESIS_FORMATS),
        metadata=_help("outputs per view, any of png,nrrd,dcm (default: all)"),
    )
    overwrite: bool = field(
        default=False, metadata=_help("replace the run in an existing output folder (other files stay)")
    )
    device: str | None = field(default=DEFAULT_DEVICE, metadata=_help("cpu or cuda (default: cuda if available)"))

    def __post_init__(self) -> None:
        """Refuse no style or several, unknown formats, and angles that are not numbers (the geometry is
        checked by the C-arm views of the CT)."""
        chosen = [self.style is not None, bool(self.drr_style), self.model_style is not None]
        if sum(chosen) != 1:
            raise CT2XError("give one style: --style FILE, --drr-style or --model-style NAME")
        _formats(self.format)
        _angles(self, "angles", required=False)
        _angles(self, "secondary", required=False)
        _detector(self)

    @property
    def formats(self) -> set[str]:
        """The files written per view, a subset of :data:`SYNTHESIS_FORMATS`."""
        return _formats(self.format)

    @property
    def primaries(self) -> tuple[float, ...]:
        """The primary angles when neither ``angles`` nor a ``like`` radiograph gives them."""
        return self.angles if self.angles is not None else DEFAULT_ANGLES


@dataclass(frozen=True)
class EvaluationSettings:
    """How ``ct2x evaluate`` scores (its inputs are the models, the held-out dataset and radiographs).

    ``styles``: number of style references; ``lpips_weights``: torchvision AlexNet weights
    (``None``: the torch hub cache); ``grid_cts`` / ``grid_styles``: size of the style grid;
    ``real_crop``: centred fraction of each real radiograph's shorter side kept for the realism
    measures (the field of view; see docs/evaluation.md); ``drr_step`` / ``scale_step``: ray-marching
    steps (voxels of the stored CT grid) of the physics DRRs at the evaluation views and of the
    scale-error sweep; ``seed``: of the untrained control, KID's subsets and the C2ST folds; ``floor`` /
    ``other_collection``: folders of real radiographs scored like the synthetic rows (the floor of the
    realism measures: other patients of the real set's collection, another collection; ``None``: not placed)."""

    styles: int = field(default=5, metadata=_help("style references drawn from --xray (default: %(default)s)"))
    lpips_weights: Path | None = field(default=None, metadata=_help("torchvision alexnet-owt-7be5be79.pth"))
    floor: Path | None = field(
        default=None,
        metadata=_help(
            "folder of real radiographs of OTHER patients of --xray's collection (e.g. a split by patient), scored "
            "like the synthetic rows: the floor of the realism measures; no film may also be in --xray"
        ),
    )
    other_collection: Path | None = field(
        default=None,
        metadata=_help(
            "folder of real radiographs of another collection (another hospital or device), scored like the "
            "synthetic rows: what a change of collection alone costs in the realism measures"
        ),
    )
    batch_size: int = 8
    grid_cts: int = 4
    grid_styles: int = 5
    real_crop: float = field(
        default=0.4,
        metadata=_help(
            "centred fraction of each real radiograph's shorter side kept for the realism measures, to match the "
            "detector's field of view (default %(default)s: about 155 mm of a 390 mm chest film, the field at the "
            "isocenter of the default C-arm; 1 keeps the whole film)"
        ),
    )
    drr_step: float = field(default=0.5, metadata=_help("ray step (voxels) of the physics DRRs (default: %(default)g)"))
    scale_step: float = field(
        default=1.0,
        metadata=_help(
            "ray step (voxels) of the DRRs of the scale-error sweep, 9 distances per CT (default: %(default)g)"
        ),
    )
    seed: int = 0

    def __post_init__(self) -> None:
        """Refuse fewer than 2 styles (the style effect compares styles), a crop outside (0, 1], and a ray step
        that is not a positive finite number of voxels (``inf`` would pass a plain ``> 0`` check and fail inside
        the renders), naming ``ct2x evaluate``'s option."""
        _at_least(self, "styles", 2, " (the style effect compares styles)")
        if not is_real(self.real_crop) or not 0 < self.real_crop <= 1:
            raise CT2XError(
                f"--real-crop is a fraction in (0, 1] of each radiograph's shorter side, got {self.real_crop!r}"
            )
        for name in ("drr_step", "scale_step"):
            positive_finite(f"--{name.replace('_', '-')} ({name})", getattr(self, name), "voxels (e.g. 0.5)")
        for name in ("batch_size", "grid_cts", "grid_styles"):
            _at_least(self, name, 1)
        _at_least(self, "seed", 0)
