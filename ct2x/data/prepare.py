"""``ct2x prepare``: turn a folder of CTs (e.g. a CTSpine1K export) into a training dataset.

For every CT found under the input folder (``*.nii``, ``*.nii.gz``, ``*.nrrd``, ``*.nhdr``,
``*.mha``, ``*.mhd``, and every folder of DICOM files as one series) this

1. reads it in HU with its LPS placement (``ct2x.volume.read_ct``),
2. resamples it to the paper's grid (1 mm, then a ``size``^3 cube; ``ct2x.volume.preprocess``),
3. renders DRRs with DeepDRR's physics at the C-arm poses from the CT as read
   (``ct2x.drr.render_drr``), and MIPs of the resampled grid at the same poses
   (``ct2x.drr.mip``, the pose attention module's input),
4. with ``projections`` (the default, which the default ``projected`` config preset needs), also keeps what
   the projected generator sees of each view: the three per-material area densities the DRR was computed
   from (``ct2x.drr.area_densities``) and the MIP of the CT as read, at the DRR's detector
   (:data:`PROJECTION_CHANNELS`),

and writes ``volumes/<name>-<hash>.safetensors`` (tensors ``ct`` int16 HU ``(D, D, D)`` in
``k, j, i`` order, ``ct_ijk_to_lps`` float64 ``(4, 4)``, ``drr`` and ``mip`` float32
``(V, H, W)``, ``poses`` float32 ``(V, 25)``, with ``projections`` also ``projections``
float16 ``(V, 4, H, W)``; metadata ``source``, ``sha256`` and ``settings``, so each file
describes itself) plus ``manifest.json`` (sources, content hashes, geometry, physics, poses).
Re-running skips every CT whose content hash is already in the manifest with a complete file; a
CT that fails is reported and skipped: one that cannot be opened (e.g. permission denied), and one too
thin for the grid (:func:`check_grid_coverage`; a thin slab is warned about). The settings are
checked when made (:class:`PrepareSettings`; the run's workers and renderer by
:class:`ct2x.options.PrepareOptions`), and the views' memory before any CT is read
(:func:`check_views_memory`). Files are written atomically.

Views: the grid of ``angles`` x ``secondary`` at one SID/SDD, or, with ``random_views = N``, N
views per CT drawn from continuous ranges (primary, secondary angle, SID; the SDD and detector
follow the SID, ``ct2x.geometry.matched_chain``), seeded by the CT's content hash so a re-run
draws the same views.

One ``prepare`` at a time writes into a dataset folder: a second one waits for the first
(:func:`ct2x.folder_lock.folder_lock`), then reads the manifest the first wrote. Each run starts
by repairing the manifest from the folder: a damaged or missing volume file is dropped from it
(and re-rendered when its CT is among the inputs), and a complete volume file of the same settings
that the manifest misses (a run stopped between writing it and the manifest) is listed again.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import multiprocessing
import os
import sys
import warnings
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ct2x.atomic import WriteError, atomic_path, remove_temporaries, write_safetensors
from ct2x.errors import CT2XError, positive_finite
from ct2x.folder_lock import folder_lock
from ct2x.geometry import (
    DEFAULT_DETECTOR_PIXELS,
    DEFAULT_PIXEL_MM,
    DEFAULT_SDD_MM,
    DEFAULT_SID_MM,
    CArm,
    matched_chain,
    views,
)
from ct2x.options import (
    DEFAULT_ANGLES,
    DEFAULT_PHOTONS,
    DEFAULT_SPECTRUM,
    DEFAULT_STEP_VOXELS,
    REMOVE_TABLE_HELP,
    PrepareOptions,
    angles_help,
    is_real,
    is_whole,
    option_label,
    secondary_help,
)

MANIFEST = "manifest.json"
FORMAT = "ct2x-dataset"
FORMAT_VERSION = 1
CT_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: The channels of a stored ``projections`` tensor: area densities (g/cm^2) of DeepDRR's three
#: materials, then the MIP (HU) of the CT as read.
PROJECTION_CHANNELS = ("air_g_cm2", "soft_tissue_g_cm2", "bone_g_cm2", "mip_hu")
#: A CT must span at least this many voxels of the dataset's grid along every LPS axis; a thinner
#: one is refused: its resampled grid may hold no sample of it (all air, and so its MIPs) while its
#: DRRs, rendered from the CT as read, show it.
MIN_GRID_VOXELS = 2
#: A CT spanning fewer grid voxels than this along an axis is prepared with a warning: its grid and
#: MIPs show a thin sheet of it (e.g. a few slices of a series exported alone).
THIN_GRID_VOXELS = 8
#: The advice when prepare's renders need more memory than the machine has.
MEMORY_FIX = (
    "use fewer views per CT (ct2x prepare --random-views N, or fewer --angles), a smaller --size or fewer "
    "--workers; a CT of very many voxels can be resampled coarser before prepare"
)
#: Settings added after the first manifests, with the value a manifest without them was made with where that
#: is not today's default (prepare stored no projections before they were a setting).
_ADDED_LATER = {"projections": False}
#: The whole-number settings: (least value, unit).
_COUNTS = {"detector_size": (1, "pixels"), "grid_size": (2, "voxels a side"), "random_views": (0, "views")}
#: The settings that are positive finite lengths: their unit.
_LENGTHS = {"sdd": "mm", "sid": "mm", "pixel_mm": "mm", "step": "voxels", "grid_spacing_mm": "mm"}


class ThinCTWarning(UserWarning):
    """A CT spans fewer than :data:`THIN_GRID_VOXELS` voxels of the dataset's grid along an axis."""


def _setting(name: str) -> str:
    """A setting as messages name it: its ``ct2x prepare`` option and its field, e.g. ``--grid (grid_size)``;
    the bare field for a setting the command line does not set."""
    return option_label(PrepareSettings, name)


@dataclass(frozen=True)
class PrepareSettings:
    """Everything that decides a dataset's content; a dataset is only extended with the same settings.

    Angles in degrees, distances in mm (LPS), ``step`` in voxels, ``photons`` per pixel
    (0 = noise-free), ``grid_spacing_mm`` and ``grid_size`` the resampling of paper sect. 4.1.
    ``random_views`` > 0 replaces the angle grid by that many views per CT drawn uniformly from
    ``primary_range`` x ``secondary_range`` x ``sid_range`` (the SDD and the detector width follow
    the SID: ``ct2x.geometry.matched_chain``; ``detector_size`` pixels). ``projections`` keeps
    the generator's projection channels (module docstring). The settings ``ct2x prepare`` sets carry
    its help text and flag in their metadata (:mod:`ct2x.options`).
    """

    angles: tuple[float, ...] = field(default=DEFAULT_ANGLES, metadata={"help": angles_help()})
    secondary: tuple[float, ...] = field(default=(0.0,), metadata={"help": secondary_help()})
    sdd: float = DEFAULT_SDD_MM
    sid: float = DEFAULT_SID_MM
    detector_size: int = field(
        default=DEFAULT_DETECTOR_PIXELS,
        metadata={"help": "DRR size in pixels, square (default: %(default)s)", "option": "--size"},
    )
    pixel_mm: float = DEFAULT_PIXEL_MM
    step: float = field(
        default=DEFAULT_STEP_VOXELS, metadata={"help": "ray-marching step in voxels (default: %(default)g)"}
    )
    spectrum: str = DEFAULT_SPECTRUM
    photons: float = field(
        default=DEFAULT_PHOTONS,
        metadata={"help": "photons per pixel for Poisson noise, 0 for none (default: %(default)g)"},
    )
    grid_spacing_mm: float = 1.0
    grid_size: int = field(
        default=128,
        metadata={"help": "CT grid after resampling, voxels per side (default: %(default)s)", "option": "--grid"},
    )
    random_views: int = field(
        default=0,
        metadata={
            "help": "instead of the --angles grid, N views per CT drawn at random: primary -90..90, secondary "
            "-30..30 degrees, source 450-1800 mm from the isocenter with the detector and its distance following "
            "(mobile C-arm to chest radiograph); the same views on every re-run (default: the angle grid)"
        },
    )
    primary_range: tuple[float, float] = (-90.0, 90.0)
    secondary_range: tuple[float, float] = (-30.0, 30.0)
    sid_range: tuple[float, float] = (450.0, 1800.0)
    remove_table: bool = field(default=False, metadata={"help": REMOVE_TABLE_HELP})
    projections: bool = field(
        default=True,
        metadata={
            "help": "store the projected generator's inputs too: per-material area densities and the MIP of each "
            "view, which the default config preset 'projected' trains on; --no-projections stores DRRs and MIPs "
            "only, for the 'small' and 'paper' presets (default: %(default)s)"
        },
    )

    def __post_init__(self) -> None:
        """Refuse, in one line naming the setting (and its ``ct2x prepare`` option), every value no
        dataset can be made with, before any CT is read."""
        for name in ("angles", "secondary"):
            values = getattr(self, name)
            if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) == 0:
                raise CT2XError(f"{_setting(name)} must be one or more angles in degrees, got {values!r}")
            for value in values:
                if not is_real(value) or not -180 <= value <= 180:
                    raise CT2XError(f"{_setting(name)} must be angles in [-180, 180] degrees, got {value!r}")
        if len(self.secondary) not in (1, len(self.angles)):
            raise CT2XError(
                f"{_setting('secondary')} takes one angle for all views or one per primary angle: got "
                f"{len(self.secondary)} for {len(self.angles)} primary angles"
            )
        for name, (low, what) in _COUNTS.items():
            value = getattr(self, name)
            if not is_whole(value) or value < low:
                extra = " (0: the angle grid)" if name == "random_views" else ""
                raise CT2XError(
                    f"{_setting(name)} must be a whole number of {what}, at least {low}{extra}; got {value!r}"
                )
        for name, unit in _LENGTHS.items():
            positive_finite(_setting(name), getattr(self, name), unit)
        if not is_real(self.photons) or not 0 <= self.photons < math.inf:
            raise CT2XError(
                f"{_setting('photons')} must be a finite number of photons per pixel, or 0 for no noise; "
                f"got {self.photons!r}"
            )
        for name in ("primary_range", "secondary_range", "sid_range"):
            pair = getattr(self, name)
            if len(pair) != 2 or not all(is_real(v) and math.isfinite(v) for v in pair) or pair[0] > pair[1]:
                raise CT2XError(f"{name} must be (lowest, highest), two finite numbers in order; got {pair!r}")
        # the geometry (distances in range, the patient between source and detector) is CArm's check
        if self.random_views > 0:
            for sid in self.sid_range:
                sdd, width = matched_chain(sid)
                for primary in self.primary_range:
                    for secondary in self.secondary_range:
                        CArm(primary, secondary, sdd, sid, (self.detector_size,) * 2, (width / self.detector_size,) * 2)
        else:
            self.views((0.0, 0.0, 0.0))

    def views(self, isocenter: tuple[float, float, float], seed: int = 0) -> list[CArm]:
        """The C-arm views of this dataset around ``isocenter`` (LPS mm); ``seed`` draws the random views."""
        if self.random_views > 0:
            rng = np.random.default_rng(seed)
            carms = []
            for _ in range(self.random_views):
                primary, secondary, sid = (
                    rng.uniform(*r) for r in (self.primary_range, self.secondary_range, self.sid_range)
                )
                sdd, width = matched_chain(sid)
                pixel = width / self.detector_size
                carms.append(CArm(float(primary), float(secondary), sdd, float(sid), (self.detector_size,) * 2,
                                  (pixel, pixel), isocenter))  # fmt: skip
            return carms
        return views(
            list(self.angles),
            list(self.secondary),
            sdd=self.sdd,
            sid=self.sid,
            detector_shape=(self.detector_size, self.detector_size),
            pixel_spacing=(self.pixel_mm, self.pixel_mm),
            isocenter=isocenter,
        )


@dataclass
class PrepareReport:
    """What one ``prepare`` run did."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    if path.suffix:
        return False
    try:
        with path.open("rb") as handle:
            header = handle.read(132)
    except OSError:  # unreadable: not known to be a slice (a readable slice beside it finds its folder)
        return False
    return header[128:132] == b"DICM"


def find_cts(root: str | Path) -> list[Path]:
    """Every CT under ``root``: image files by suffix, and each folder holding DICOM files (sorted)."""
    root = Path(root)
    if not root.is_dir():
        raise CT2XError(f"CT folder {root} does not exist or is not a folder")
    found: list[Path] = []
    dicom_folders: set[Path] = set()
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.name.lower().endswith(CT_SUFFIXES):
            found.append(path)
        elif _is_dicom_file(path):
            dicom_folders.add(path.parent)
    found.extend(sorted(dicom_folders))
    if not found:
        raise CT2XError(
            f"no CT found under {root}: expected NIfTI (.nii, .nii.gz), NRRD, MHA/MHD files or DICOM series folders"
        )
    return found


def content_hash(source: Path) -> str:
    """SHA-256 of a CT file's bytes, or of a DICOM folder's file names and bytes.

    Raises:
        CT2XError: a file (or the folder) cannot be read, e.g. permission denied; named with the reason.
    """
    digest = hashlib.sha256()
    path = source
    try:
        files = sorted(p for p in source.iterdir() if p.is_file()) if source.is_dir() else [source]
        for path in files:
            if source.is_dir():
                digest.update(path.name.encode())
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    except OSError as error:
        name = error.filename or path
        if isinstance(error, PermissionError):
            raise CT2XError(f"cannot read '{name}': permission denied; make it readable for your user") from None
        reason = error.strerror or str(error)
        raise CT2XError(f"cannot read '{name}': {reason}; check the file (or copy it again)") from None
    return digest.hexdigest()


def _volume_name(source: Path, digest: str) -> str:
    stem = source.name
    for suffix in CT_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem) or "ct"
    return f"{safe}-{digest[:12]}"


_LPS_AXES = ("L (left-right)", "P (anterior-posterior)", "S (superior-inferior)")
_VOXEL_AXES = ("columns", "rows", "slices")


def check_grid_coverage(source: Path, volume, grid) -> None:  # noqa: ANN001 (CTVolume: imported in the worker)
    """Refuse a CT too thin for its resampled ``grid`` (``ct2x.volume.preprocess``), warn about a thin slab.

    The rule: along every LPS axis the CT's bounding box must span at least :data:`MIN_GRID_VOXELS`
    voxels of the grid (whose isotropic voxel is the CT's largest extent over the grid size), else it
    is refused, naming its thickness in mm and slices and the minimum; fewer than
    :data:`THIN_GRID_VOXELS` is a :class:`ThinCTWarning`. A grid that holds none of the CT's tissue
    (no voxel above -500 HU while the CT has some) is refused too: its MIPs would be all air while its
    DRRs, rendered from the CT as read, show anatomy.
    """
    from ct2x.volume import NOT_CT_MIN_HU

    corners = volume.corners_lps
    extent = corners.max(axis=0) - corners.min(axis=0)
    voxel, size = float(grid.spacing[0]), grid.array.shape[0]
    axis = int(np.argmin(extent))
    along = int(np.argmax(np.abs(np.asarray(volume.direction)[axis])))  # the CT's voxel axis nearest to it
    thickness = (
        f"it spans {extent[axis]:.3g} mm ({volume.shape_ijk[along]} {_VOXEL_AXES[along]} of "
        f"{volume.spacing[along]:.3g} mm) along {_LPS_AXES[axis]}"
    )
    voxels = f"the grid's voxels are {voxel:.3g} mm (the CT's largest extent over {size})"
    finer = "or use a finer grid (a larger --grid)"
    if extent[axis] < MIN_GRID_VOXELS * voxel:
        raise CT2XError(
            f"'{source}' is too thin for the dataset's {size}^3 grid: {thickness}, but {voxels} and a CT must span "
            f"at least {MIN_GRID_VOXELS} of them ({MIN_GRID_VOXELS * voxel:.3g} mm) along every axis, or its grid "
            f"and MIPs miss what its DRRs show: prepare the complete series (all its slices), {finer}"
        )
    if not (grid.array > NOT_CT_MIN_HU).any() and (volume.array > NOT_CT_MIN_HU).any():
        raise CT2XError(
            f"'{source}': its resampled {size}^3 grid holds none of its tissue (no voxel above {NOT_CT_MIN_HU:g} HU) "
            f"while the CT as read does, so its MIPs would be all air while its DRRs show anatomy ({voxels}): "
            f"prepare the complete series, {finer}"
        )
    if extent[axis] < THIN_GRID_VOXELS * voxel:
        warnings.warn(
            ThinCTWarning(
                f"'{source}' is a thin slab for the dataset's {size}^3 grid: {thickness}, {extent[axis] / voxel:.2g} "
                f"voxels of {voxel:.3g} mm (fewer than {THIN_GRID_VOXELS}), so its stored grid and MIPs show a sheet "
                f"a few voxels thick: check that the whole series was exported, {finer}"
            ),
            stacklevel=2,
        )


def prepare_volume(
    source: Path, digest: str, settings: PrepareSettings, out: Path, device: str, backend: str = "auto"
) -> str:
    """Prepare one CT into ``out/volumes``; returns the file name written. Runs in a worker process.

    A CT too thin for the grid is refused (:func:`check_grid_coverage`), and so is a render that
    cannot fit in memory, with prepare's advice (:data:`MEMORY_FIX`)."""
    import torch

    from ct2x.body import read_patient
    from ct2x.drr import area_densities, drr_from_area, mip, render_drr
    from ct2x.drr.render import check_render_memory
    from ct2x.volume import preprocess

    torch.set_num_threads(max(1, int(os.environ.get("CT2X_THREADS", "1"))))
    volume = read_patient(source, remove_table=settings.remove_table)
    grid = preprocess(volume, spacing_mm=settings.grid_spacing_mm, size=settings.grid_size)
    check_grid_coverage(source, volume, grid)
    carms = settings.views(tuple(float(c) for c in grid.center_lps), seed=int(digest[:8], 16))
    physics = {"spectrum": settings.spectrum, "photons": settings.photons or None, "seed": int(digest[:8], 16)}
    marcher = "auto" if backend == "deepdrr" else backend  # DeepDRR renders no MIPs and no area densities
    check_render_memory(volume, carms, spectrum=settings.spectrum, device=device, backend=backend, fix=MEMORY_FIX)
    tensors = {}
    if settings.projections:  # one march gives the DRR and the generator's area-density channels
        area = area_densities(volume, carms, step=settings.step, device=device, backend=marcher)
        drr = drr_from_area(area, **physics)
        full_mip = mip(volume, carms, step=settings.step, device=device, backend=marcher)
        tensors["projections"] = torch.cat([area, full_mip[:, None]], dim=1).half().cpu().contiguous()
    else:
        drr = render_drr(
            volume, carms, step=settings.step, device=device, backend=backend, check_memory=False, **physics
        )
    name = _volume_name(source, digest) + ".safetensors"
    tensors |= {
        "ct": torch.from_numpy(np.round(grid.array).clip(-32768, 32767).astype(np.int16)),
        "ct_ijk_to_lps": torch.from_numpy(grid.ijk_to_lps),
        "drr": drr.float().cpu().contiguous(),
        "mip": mip(grid, carms, step=settings.step, device=device, backend=marcher).float().cpu().contiguous(),
        "poses": torch.from_numpy(np.stack([c.pose for c in carms]).astype(np.float32)),
    }
    metadata = {"source": str(source), "sha256": digest, "settings": json.dumps(asdict(settings), sort_keys=True)}
    write_safetensors(out / "volumes" / name, tensors, metadata=metadata)
    return name


def volume_file_problem(path: Path, settings: dict) -> str | None:
    """Why the prepared volume file ``path`` is not complete for a dataset of ``settings`` (the
    manifest's, as JSON); None when it is. Reads the header only: names, shapes, and that the file
    is as long as its header says (so a truncated file is found)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as stored:
            shapes = {name: tuple(stored.get_slice(name).get_shape()) for name in stored.keys()}  # noqa: SIM118
    except Exception as error:  # safetensors raises its own error type for a damaged file
        return f"{type(error).__name__}: {error}"
    grid, size = settings["grid_size"], settings["detector_size"]
    views = settings.get("random_views", 0) or len(settings["angles"])
    expected = {"ct": (grid,) * 3, "ct_ijk_to_lps": (4, 4), "drr": (views, size, size), "mip": (views, size, size)}
    expected["poses"] = (views, 25)
    if settings.get("projections"):
        expected["projections"] = (views, len(PROJECTION_CHANNELS), size, size)
    wrong = [f"{name} {shapes.get(name)}" for name, shape in expected.items() if shapes.get(name) != shape]
    return f"unexpected tensors {', '.join(wrong)}" if wrong else None


def _volume_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as stored:
        return stored.metadata() or {}


def _read_manifest(out: Path, settings: PrepareSettings) -> dict:
    path = out / MANIFEST
    fresh = {"format": FORMAT, "version": FORMAT_VERSION, "settings": asdict(settings), "volumes": []}
    if not path.exists():
        return fresh
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise CT2XError(f"the dataset manifest {path} cannot be read ({error}): delete it to start over") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise CT2XError(f"{path} is not a CT2X dataset manifest of version {FORMAT_VERSION}: choose another --out")
    # settings added later take the value that reproduces what the older run made
    stored = {**json.loads(json.dumps(asdict(PrepareSettings()))), **_ADDED_LATER, **(manifest.get("settings") or {})}
    wanted = json.loads(json.dumps(asdict(settings)))
    if stored != wanted:
        differ = "; ".join(
            f"{_setting(name)} {_shown(stored, name)} there, {_shown(wanted, name)} now"
            for name in [*stored, *(n for n in wanted if n not in stored)]
            if stored.get(name) != wanted.get(name)
        )
        raise CT2XError(
            f"the dataset in {out} was prepared with other settings: {differ}; use the same options, "
            "or choose another --out"
        )
    return manifest


def _shown(settings: dict, name: str) -> str:
    """One setting's value as JSON (as the manifest stores it), or ``(none)``."""
    return json.dumps(settings[name]) if name in settings else "(none)"


def _write_manifest(out: Path, manifest: dict) -> None:
    try:
        with atomic_path(out / MANIFEST) as tmp:
            tmp.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    except WriteError as error:
        raise CT2XError(
            f"{error}; the previous manifest is kept: free space, then run ct2x prepare again "
            "(it lists the CTs done from their files)"
        ) from None


def _repair_manifest(out: Path, manifest: dict) -> None:
    """Make ``manifest`` (in place, and on disk when it changed) list exactly the complete volume
    files of its settings in ``out/volumes``: drop (and delete) damaged or missing ones, and list
    again the complete files it misses. Call it holding the folder's lock."""
    folder = out / "volumes"
    settings = json.loads(json.dumps(manifest["settings"]))  # as stored in the files' metadata
    kept = []
    for entry in manifest["volumes"]:
        path = folder / entry["file"]
        problem = "is missing" if not path.is_file() else volume_file_problem(path, settings)
        if problem is None:
            kept.append(entry)
            continue
        state = problem if not path.is_file() else f"is damaged ({problem})"
        warnings.warn(
            f"the prepared volume {path} {state}: dropped from the manifest, "
            f"prepared again when its CT {entry['source']} is under --ct",
            stacklevel=3,
        )
        path.unlink(missing_ok=True)
    files, hashes = {e["file"] for e in kept}, {e["sha256"] for e in kept}
    for path in sorted(folder.glob("*.safetensors")):
        if path.name in files or volume_file_problem(path, settings) is not None:
            continue
        metadata = _volume_metadata(path)
        same = json.loads(metadata.get("settings", "null")) == settings and "source" in metadata
        if same and metadata.get("sha256") and metadata["sha256"] not in hashes:  # one file per CT content
            kept.append({"file": path.name, "source": metadata["source"], "sha256": metadata["sha256"]})
            hashes.add(metadata["sha256"])
    if kept != manifest["volumes"]:
        manifest["volumes"] = kept
        _write_manifest(out, manifest)


def prepare_dataset(
    ct_root: str | Path,
    out: str | Path,
    settings: PrepareSettings | None = None,
    workers: int | None = None,
    device: str | None = None,
    progress: bool = True,
    backend: str = "auto",
) -> PrepareReport:
    """Prepare every CT under ``ct_root`` into the dataset folder ``out`` (see the module docstring).

    ``settings``: what the dataset holds (``None``: :class:`PrepareSettings`' defaults). ``workers``: CTs
    prepared at once, one process each (``None``: :class:`ct2x.options.PrepareOptions`' default).
    ``device``: where to render (``None`` or ``"auto"``: CUDA when available, else the CPU).
    ``backend`` renders the DRRs and MIPs (see :func:`ct2x.drr.render_drr`): ``"numba"``
    (compiled CPU kernel), ``"torch"`` (CPU or GPU), ``"deepdrr"`` (DeepDRR on a CUDA GPU,
    MIPs by ``"auto"``; only without projections) or ``"auto"`` (the fastest available on ``device``). All are checked
    (:class:`ct2x.options.PrepareOptions`) before any CT is read.
    """
    from ct2x.drr import deepdrr_backend

    chosen = {"workers": workers} if workers is not None else {}  # else the options' default
    options = PrepareOptions(ct=Path(ct_root), out=Path(out), device=device, backend=backend, **chosen)
    if backend == "deepdrr" and not deepdrr_backend.available():
        raise CT2XError(deepdrr_backend.UNAVAILABLE)
    settings = settings or PrepareSettings()
    if backend == "deepdrr" and settings.projections:
        raise CT2XError(
            "--backend deepdrr renders DRRs only, and with projection images (the default) each DRR is made from "
            "the same march as its projections: pass --no-projections to render the DRRs with DeepDRR, "
            "or choose another --backend"
        )
    from ct2x.device import torch_device

    device = str(torch_device(device))  # a device this machine lacks fails here, not once per CT
    out, workers = options.out, options.workers
    sources = find_cts(ct_root)
    check_views_memory(settings, max(1, min(workers, len(sources))))
    with folder_lock(out, "ct2x prepare", wait=True, create=True) as held:  # a refused run leaves no folder
        held.mkdir("volumes")
        remove_temporaries(out, MANIFEST)
        remove_temporaries(out / "volumes", "*.safetensors")
        return _prepare_into(sources, ct_root, out, settings, workers, device, progress, backend)


def _prepare_job(
    source: Path, digest: str, settings: PrepareSettings, out: Path, device: str, backend: str
) -> tuple[str, list[tuple[str, str, str]]]:
    """:func:`prepare_volume` in a worker process, and the warnings it gave: (category's module, its
    name, message) each, for the main process to show as its own (:func:`_warn_again`); a worker
    process would print them in Python's two-line format, beside the progress bar."""
    with warnings.catch_warnings(record=True) as caught:
        name = prepare_volume(source, digest, settings, out, device, backend)
    notes = ((w.category.__module__, w.category.__qualname__, str(w.message)) for w in caught)
    return name, list(dict.fromkeys(notes))


def _warn_again(source: Path, notes: list[tuple[str, str, str]]) -> None:
    """Issue the warnings a worker gave while preparing ``source`` (:func:`_prepare_job`) in this
    process, each naming the CT, with its own category where it can be imported (else UserWarning)."""
    for module, name, message in notes:
        try:
            category = importlib.import_module(module)
            for part in name.split("."):
                category = getattr(category, part)
        except (ImportError, AttributeError):
            category = UserWarning
        if not (isinstance(category, type) and issubclass(category, Warning)):
            category = UserWarning
        warnings.warn(message if str(source) in message else f"{source}: {message}", category, stacklevel=3)


def check_views_memory(settings: PrepareSettings, workers: int = 1) -> None:
    """Refuse views no CT can be rendered at on this machine, before any CT is read: the memory of the
    rays and the spectral sum alone (``ct2x.drr.render.render_memory_bytes`` without the CT's voxels,
    which each CT's own check adds), in each of ``workers`` processes at once; warn when more than is
    free now (``ct2x.memory.check_memory``). The advice names prepare's options (:data:`MEMORY_FIX`)."""
    from ct2x.drr.render import BYTES_PER_RAY, spectrum_sum_bytes
    from ct2x.drr.spectrum import get_spectrum
    from ct2x.memory import check_memory

    count, size = settings.random_views or len(settings.angles), settings.detector_size
    energies = len(get_spectrum(settings.spectrum).energies_kev)
    need = workers * (size * size * BYTES_PER_RAY * count + spectrum_sum_bytes(energies, size * size))
    at_once = f", in {workers} workers at once" if workers > 1 else ""
    check_memory(need, f"rendering {count} views of {size} x {size} pixels per CT{at_once}", MEMORY_FIX)


def _prepare_into(
    sources: list[Path],
    ct_root: str | Path,
    out: Path,
    settings: PrepareSettings,
    workers: int,
    device: str,
    progress: bool,
    backend: str,
) -> PrepareReport:
    """:func:`prepare_dataset`'s work, with the dataset folder locked."""
    from tqdm import tqdm

    manifest = _read_manifest(out, settings)
    _repair_manifest(out, manifest)
    known = {entry["sha256"] for entry in manifest["volumes"]}
    report = PrepareReport()
    todo: list[tuple[Path, str]] = []
    for source in sources:
        try:
            digest = content_hash(source)
        except CT2XError as error:  # an unreadable CT is reported and skipped like a bad one
            report.failed.append((str(source), str(error)))
            tqdm.write(f"ct2x: skipped {source}: {error}")
            continue
        if digest in known:  # done, or the same CT content found twice
            report.skipped.append(str(source))
        else:
            todo.append((source, digest))
            known.add(digest)
    workers = max(1, min(workers, len(todo) or 1))
    threads = max(1, (os.cpu_count() or 1) // workers)
    bar = tqdm(total=len(todo), desc="prepare", unit="CT", disable=not progress)
    env_threads = os.environ.get("CT2X_THREADS")
    os.environ["CT2X_THREADS"] = str(threads)
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            jobs: dict[Future, tuple[Path, str]] = {
                pool.submit(_prepare_job, source, digest, settings, out, device, backend): (source, digest)
                for source, digest in todo
            }
            try:
                for job in as_completed(jobs):
                    source, digest = jobs[job]
                    try:
                        name, notes = job.result()
                    except Exception as error:  # a bad CT is reported and skipped, never stops the run
                        message = str(error) if isinstance(error, CT2XError) else f"{type(error).__name__}: {error}"
                        report.failed.append((str(source), message))
                        bar.write(f"ct2x: skipped {source}: {message}")
                    else:
                        manifest["volumes"] = [e for e in manifest["volumes"] if e["sha256"] != digest]
                        manifest["volumes"].append({"file": name, "source": str(source), "sha256": digest})
                        _write_manifest(out, manifest)
                        report.done.append(str(source))
                        with tqdm.external_write_mode(file=sys.stderr):  # each on its own line, not on the bar
                            _warn_again(source, notes)
                    bar.update()
            except BaseException:  # Stop (SIGINT), or the manifest cannot be written: no CT is started after it
                # wait=True here: the with-block's own shutdown(wait=True) would clear cancel_futures again
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        bar.close()
        if env_threads is None:
            os.environ.pop("CT2X_THREADS", None)
        else:
            os.environ["CT2X_THREADS"] = env_threads
    if not manifest["volumes"]:
        raise CT2XError(f"no CT under {ct_root} could be prepared: {report.failed[0][1] if report.failed else ''}")
    _write_manifest(out, manifest)
    return report
