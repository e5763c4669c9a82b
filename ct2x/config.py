"""One configuration for CT2X-GAN: every size, weight and switch, with the paper's values as defaults.

:class:`CT2XConfig` is a flat, frozen dataclass. Build it with :meth:`CT2XConfig.preset`
(``"paper"``, ``"small"`` or ``"projected"``), :meth:`CT2XConfig.from_file` (``.yaml``, ``.yml`` or ``.json``)
or :meth:`CT2XConfig.from_dict`; change it with :meth:`CT2XConfig.replace`. A file may name a
``preset`` to start from and then override keys. Unknown keys, wrong types and values out of
range raise :class:`~ct2x.errors.CT2XError` naming the key.

Where each default comes from (paper = CT2X-GAN, ACM MM 2024; sect. 4.1 unless noted):

* ``volume_size`` 128, ``voxel_spacing_mm`` 1: "resampled to 1 x 1 x 1 mm^3 and reshaped
  into 128 x 128 x 128".
* ``image_size`` 256: Fig. 4 ("at a resolution of 256 * 256"); 14 synthesis layers.
* ``num_content_layers`` 8: "Layers one to eight are designated as the content layers".
* ``ct_channels`` / ``ct_latent_channels``: the paper gives the layer structure of E_CT
  (input layer, three downsampling layers, latent layer, each 2 x (Conv3D, BN, LeakyReLU 0.2))
  but no widths; the widths are ours.
* ``style_channels``: "seven 2D convolution layers in each of its two style branches"; the
  widths are ours (MUNIT-like style encoder). ``content_channels`` likewise ours.
* ``w_dim`` 512, ``g_channel_base`` 32768, ``g_channel_max`` 512 and the same for D: not in
  the paper; StyleGAN2's values at 256^2, which the paper's generator follows (num_ws = 14).
* ``pose_embed_dim``, ``pam_mip_size``, ``pam_patch_size``, ``pam_tau``: not in the paper
  (eq. 13-15 give the form only); ours. ``pam_tau = None`` means sqrt(w_dim), the usual
  scaled-dot-product temperature.
* ``ema_beta`` 0.999 (largest EMA decay of the generator side, per step; warmed up from 0.1)
  and ``r1_interval`` 16 (lazy R1):
  not in the paper; StyleGAN2's practice.
* ``lr`` 0.0025, ``batch_size`` 16, ``epochs`` 100: sect. 4.1. ``adam_betas`` (0, 0.99):
  not stated; StyleGAN2's.
* ``drr_step`` 0.1 (the ray step of the MIPs and DRRs made at synthesis), ``sdd_mm`` 1020,
  ``sid_mm`` 530: sect. 4.1 (the paper's text swaps the SOD and SDD labels: 1020 mm is source to
  detector, 530 mm source to isocenter, as on DeepDRR's mobile C-arm); the default geometry of
  a model whose card names none. ``detector_width_mm``: DeepDRR's 1536 x 0.194 mm sensor. The
  training views, spectrum and photon count are those of the dataset (``ct2x prepare``).
* ``hu_min``, ``hu_max``: not stated; HU are clipped to [-1024, 2048] and scaled to [-1, 1].
* Loss weights ``lambda_*`` (eq. 8, 9, 17, 18): **not stated in the paper**. We use 1 for
  MAE, LPIPS, content and style consistency, zero loss and adversarial terms, and
  ``lambda_r1`` = 0.5, which equals StyleGAN2's gamma = 1 at 256^2 (StyleGAN2 weights R1 by
  gamma / 2; eq. 17 has no 1/2).
* ``adv_loss`` ``"softplus"``: eq. 16-17 are printed as ``-D(fake)`` and ``D(fake) - D(real)``;
  StyleGAN2 and EG3D, whose R1 penalty and pose conditioning the paper adopts, write their
  losses the same way with the softplus understood (non-saturating logistic loss).
  ``"linear"`` takes the equations literally.
* ``lpips_backbone`` ``"alex"``: LPIPS's default backbone [49]; the paper does not say which.

Beyond the paper (the ``projected`` preset, see :mod:`ct2x.models.projection` for why):

* ``projection_inputs``: G also reads, as images, the CT's per-material area densities and MIP
  at the target view (``ct2x prepare --projections``); ``projection_scale_g_cm2`` scales the
  three area densities (air, soft tissue, bone) to about [0, 1].
* ``use_xray_discriminator``: a multi-scale patch discriminator D_X whose reals are real
  radiographs cropped to the synthesized detector's field of view, whose fakes are Î_X (G's
  only output, Î_DRR, without E_sty); its term joins eq. 18 with weight ``lambda_xray_adv``;
  ``xray_d_channels`` (first width) and ``xray_d_scales`` (image scales) size it;
  ``radiograph_field_mm`` is the field a real radiograph is taken to cover at the patient (the
  films carry no calibrated pixel size; a chest film covers about 400 mm).
* ``physics_anchor``: G's output is a residual on a style-toned physics DRR computed from the
  projection images with ``physics_spectrum`` (the dataset's spectrum;
  :mod:`ct2x.models.physics_anchor`).
* ``chain_anchor`` (with ``physics_anchor`` and E_sty): the X-ray path's base is not the physics DRR
  but the imaging chain's radiograph of the view in the style reference's look (the chain of
  ``chain_preset``, a key of ``ct2x.imaging.PRESETS``, fitted to the reference:
  :func:`ct2x.imaging.styled`); G's residual and the tone curve come on top, D_X judges the sum.
  The DRR path keeps the physics base.
* ``residual_detail_px`` (with ``physics_anchor``): G's residual keeps only its detail, the spatial periods
  shorter than this many pixels of ``image_size``, whole from half of it down (a raised-cosine high-pass,
  :func:`ct2x.models.physics_anchor.detail_of`; 0, the
  default: the whole residual). Anchored on a base that already has the right layout, G may then add grain,
  sharpness and fine texture but no glow or blob wider than about this period.
* ``lambda_edge``: weight of the edge term, 1 - NCC of the Sobel maps of Î_X and of the physics
  image (keeps the anatomy in the X-ray style); ``lambda_hist``: weight of the histogram term,
  the 1-D Wasserstein distance between the intensities of Î_X and of its style reference cropped
  to the view's field (makes the X-ray style follow the reference). Not in the paper.

Ablations of Table 2: ``use_style_encoder`` (False: no E_sty; G synthesises DRRs only, with
a learned constant style code), ``use_pam`` (False: the content code is the pose-conditioned
query of eq. 14, straight from E_CT and the pose MLP, without attention), ``use_consistency``
(False: L_consis of eq. 9 is skipped, i.e. lambda_cc = lambda_sc = 0).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ct2x.errors import CT2XError
from ct2x.geometry import FILM_FIELD_MM
from ct2x.options import IMAGING_PRESETS

#: The built-in configurations (:meth:`CT2XConfig.preset`), in the order offered to users: the product's
#: model first. Torch-free, so the CT2XTraining module takes its choices from here.
PRESETS = ("projected", "small", "paper")
#: Keys of earlier versions that never changed anything (the dataset decides the views and the
#: physics); a config or model card holding them still loads, without them.
RETIRED_KEYS = ("view_angles", "drr_spectrum", "drr_photons")
LPIPS_BACKBONES = ("alex", "vgg", "random")
ADV_LOSSES = ("softplus", "linear")


@dataclass(frozen=True)
class CT2XConfig:
    """Every size, loss weight and switch of CT2X-GAN (see the module docstring for sources)."""

    # ---- data: CT grid, intensity scaling, DRR geometry (sect. 4.1)
    volume_size: int = 128
    voxel_spacing_mm: float = 1.0
    hu_min: float = -1024.0
    hu_max: float = 2048.0
    image_size: int = 256
    sdd_mm: float = 1020.0
    sid_mm: float = 530.0
    detector_width_mm: float = 1536 * 0.194
    drr_step: float = 0.1

    # ---- networks
    w_dim: int = 512
    num_content_layers: int = 8
    ct_channels: tuple[int, ...] = (16, 32, 64, 128)
    ct_latent_channels: int = 8
    style_channels: tuple[int, ...] = (32, 64, 128, 256, 256, 256)
    content_channels: tuple[int, ...] = (32, 64, 128, 256)
    pose_embed_dim: int = 256
    pam_mip_size: int = 64
    pam_patch_size: int = 8
    pam_tau: float | None = None
    g_channel_base: int = 32768
    g_channel_max: int = 512
    d_channel_base: int = 32768
    d_channel_max: int = 512
    d_cmap_dim: int = 256
    projection_inputs: bool = False
    projection_scale_g_cm2: tuple[float, ...] = (2.0, 30.0, 10.0)
    use_xray_discriminator: bool = False
    xray_d_channels: int = 64
    xray_d_scales: int = 2
    radiograph_field_mm: float = FILM_FIELD_MM
    physics_anchor: bool = False
    physics_spectrum: str = "60KV_AL35"
    chain_anchor: bool = False
    chain_preset: str = "mobile_carm_flat_panel"
    residual_detail_px: float = 0.0

    # ---- losses (eq. 8-19)
    lambda_mae: float = 1.0
    lambda_lpips: float = 1.0
    lambda_cc: float = 1.0
    lambda_sc: float = 1.0
    lambda_0: float = 1.0
    lambda_adv: float = 1.0
    lambda_r1: float = 0.5
    lambda_xray_adv: float = 1.0
    lambda_edge: float = 0.0
    lambda_hist: float = 0.0
    adv_loss: str = "softplus"
    lpips_backbone: str = "alex"
    lpips_weights: str | None = None

    # ---- ablations of Table 2
    use_style_encoder: bool = True
    use_pam: bool = True
    use_consistency: bool = True

    # ---- optimisation (sect. 4.1)
    lr: float = 0.0025
    adam_betas: tuple[float, ...] = (0.0, 0.99)
    batch_size: int = 16
    epochs: int = 100
    ema_beta: float = 0.999
    r1_interval: int = 16

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            if f.init:
                object.__setattr__(self, f.name, _coerce(f.name, getattr(self, f.name), hints[f.name]))
        self._validate()

    # ------------------------------------------------------------ derived sizes
    @property
    def num_ws(self) -> int:
        """Synthesis layers of G = W+ vectors it takes: 2 * log2(image_size) - 2 (14 at 256^2)."""
        return 2 * int(math.log2(self.image_size)) - 2

    @property
    def num_style_layers(self) -> int:
        """Synthesis layers driven by the style code: ``num_ws - num_content_layers`` (6 at 256^2)."""
        return self.num_ws - self.num_content_layers

    @property
    def tau(self) -> float:
        """The PAM's softmax temperature tau of eq. 13."""
        return math.sqrt(self.w_dim) if self.pam_tau is None else self.pam_tau

    @property
    def pixel_spacing_mm(self) -> float:
        """Detector pixel size in mm when the detector is read out at ``image_size`` pixels."""
        return self.detector_width_mm / self.image_size

    @property
    def consistency_enabled(self) -> bool:
        """Whether L_consis (eq. 9) is computed: needs E_sty and ``use_consistency``."""
        return self.use_style_encoder and self.use_consistency

    # ------------------------------------------------------------ constructors
    @classmethod
    def preset(cls, name: str = "paper", **overrides: Any) -> CT2XConfig:
        """The ``"paper"`` configuration, the ``"small"`` one that trains on a CPU, or the
        ``"projected"`` one (small sizes, projection inputs, radiograph discriminator), with overrides."""
        if name not in PRESETS:
            raise CT2XError(f"unknown config preset {name!r} (known presets: {', '.join(PRESETS)})")
        base = {"paper": {}, "small": _SMALL, "projected": _PROJECTED}[name]
        return cls.from_dict({**base, **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CT2XConfig:
        """Build from a mapping of keys to values; a ``preset`` key picks the base configuration."""
        if not isinstance(values, dict):
            raise CT2XError(f"a CT2X config must be a mapping of keys to values, got {type(values).__name__}")
        values = dict(values)
        preset = values.pop("preset", None)
        if preset is not None:
            if not isinstance(preset, str):
                raise CT2XError(f"config key 'preset' must be str, got {type(preset).__name__}")
            return cls.preset(preset, **values)
        known = _field_names()
        for key in RETIRED_KEYS:
            values.pop(key, None)
        for key in values:
            if key not in known:
                raise CT2XError(f"unknown config key {key!r} (known keys: {', '.join(sorted(known))})")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> CT2XConfig:
        """Read a ``.yaml``, ``.yml`` or ``.json`` file holding a mapping of config keys."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".yaml", ".yml", ".json"):
            raise CT2XError(f"config file {path} must end in .yaml, .yml or .json")
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise CT2XError(f"cannot read config file {path}: {error.strerror or error}") from None
        values = _parse_json(path, text) if suffix == ".json" else _parse_yaml(path, text)
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise CT2XError(f"config file {path} must hold a mapping of keys to values, got {type(values).__name__}")
        return cls.from_dict(values)

    def replace(self, **changes: Any) -> CT2XConfig:
        """A copy with some keys changed (validated like any other config)."""
        return type(self).from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-ready values (tuples become lists)."""
        return {
            f.name: list(getattr(self, f.name)) if isinstance(getattr(self, f.name), tuple) else getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.init
        }

    def save(self, path: str | Path) -> None:
        """Write the config as ``.json`` or ``.yaml``/``.yml`` (chosen by the suffix)."""
        path = Path(path)
        if path.suffix.lower() == ".json":
            path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")
        else:
            raise CT2XError(f"config file {path} must end in .yaml, .yml or .json")

    # ------------------------------------------------------------ validation
    def _validate(self) -> None:
        """Raise a CT2XError naming a key whose value is out of range (the types are checked before)."""
        self._check_network_sizes()
        self._check_data()
        self._check_projection_path()
        self._check_losses()
        self._check_optimisation()

    def _need(self, ok: bool, key: str, what: str) -> None:
        """A CT2XError ``config key '<key>' <what>, got <value>`` unless ``ok``."""
        if not ok:
            raise CT2XError(f"config key {key!r} {what}, got {getattr(self, key)!r}")

    def _check_network_sizes(self) -> None:
        """The image size and its split into content and style layers, and the widths and sizes of
        E_CT, the PAM, E_sty, G and D."""
        need, size = self._need, self.image_size
        need(size >= 8 and size & (size - 1) == 0, "image_size", "must be a power of two (128 or 256 in the paper)")
        need(
            1 <= self.num_content_layers < self.num_ws,
            "num_content_layers",
            f"must leave at least one of the {self.num_ws} synthesis layers of a {size}^2 generator to the style code",
        )
        need(len(self.ct_channels) == 4, "ct_channels", "must list 4 widths (input layer and 3 downsampling layers)")
        need(
            len(self.style_channels) == 6,
            "style_channels",
            "must list 6 widths (the 6 convolutions before the pooling of each style branch)",
        )
        need(
            len(self.content_channels) == 4,
            "content_channels",
            "must list 4 widths (stem and 3 downsampling convolutions)",
        )
        need(
            size % 2 ** (len(self.style_channels) - 1) == 0,
            "image_size",
            "must be divisible by 32 (the style branches downsample five times)",
        )
        for key in ("ct_channels", "style_channels", "content_channels"):
            need(all(c >= 1 for c in getattr(self, key)), key, "must hold positive widths")
        for key in (
            "ct_latent_channels",
            "w_dim",
            "pose_embed_dim",
            "pam_mip_size",
            "pam_patch_size",
            "g_channel_base",
            "g_channel_max",
            "d_channel_base",
            "d_channel_max",
            "d_cmap_dim",
        ):
            need(getattr(self, key) >= 1, key, "must be at least 1")
        need(self.pam_mip_size % self.pam_patch_size == 0, "pam_mip_size", "must be a multiple of pam_patch_size")
        need(
            self.pam_tau is None or (math.isfinite(self.pam_tau) and self.pam_tau > 0),
            "pam_tau",
            "must be positive (or null for sqrt(w_dim))",
        )

    def _check_data(self) -> None:
        """The CT grid, the HU window and the C-arm geometry (lengths in mm)."""
        self._need(
            self.volume_size >= 8 and self.volume_size % 8 == 0,
            "volume_size",
            "must be a multiple of 8 (E_CT downsamples three times)",
        )
        for key in ("voxel_spacing_mm", "sdd_mm", "sid_mm", "detector_width_mm", "drr_step"):
            self._need_positive(key)
        self._need(self.sid_mm < self.sdd_mm, "sid_mm", "must be smaller than sdd_mm")
        self._need(self.hu_min < self.hu_max, "hu_max", "must be larger than hu_min")

    def _check_projection_path(self) -> None:
        """The ``projected`` preset's additions: the projection images' scales, D_X, the field of a
        real radiograph (mm) and the physics anchor."""
        need = self._need
        need(
            len(self.projection_scale_g_cm2) == 3 and all(v > 0 for v in self.projection_scale_g_cm2),
            "projection_scale_g_cm2",
            "must be three positive scales (air, soft tissue, bone) in g/cm^2",
        )
        for key in ("xray_d_channels", "xray_d_scales"):
            need(getattr(self, key) >= 1, key, "must be at least 1")
        need(
            self.image_size // 2 ** (self.xray_d_scales - 1) >= 32,
            "xray_d_scales",
            "must leave images of at least 32 pixels at the coarsest scale",
        )
        self._need_positive("radiograph_field_mm")
        need(
            self.projection_inputs or not self.physics_anchor,
            "physics_anchor",
            "needs projection_inputs (the base image is computed from the projection images)",
        )
        need(
            not self.chain_anchor or (self.physics_anchor and self.use_style_encoder),
            "chain_anchor",
            "needs physics_anchor and use_style_encoder (the chain's image is the X-ray path's base)",
        )
        need(self.residual_detail_px >= 0, "residual_detail_px", "must be 0 (the whole residual) or positive")
        need(
            self.residual_detail_px == 0 or self.physics_anchor,
            "residual_detail_px",
            "needs physics_anchor (it splits G's residual from the base it is added to)",
        )
        need(self.chain_preset in IMAGING_PRESETS, "chain_preset", f"must be one of {', '.join(IMAGING_PRESETS)}")
        from ct2x.drr.spectrum import parse_name

        try:
            parse_name(self.physics_spectrum)
        except CT2XError as error:
            raise CT2XError(f"config key 'physics_spectrum': {error}") from None

    def _check_losses(self) -> None:
        """The loss weights (each >= 0; the terms on synthesized X-rays only with E_sty), the
        adversarial loss's form and LPIPS's backbone."""
        need = self._need
        for key in (
            "lambda_mae",
            "lambda_lpips",
            "lambda_cc",
            "lambda_sc",
            "lambda_0",
            "lambda_adv",
            "lambda_r1",
            "lambda_xray_adv",
            "lambda_edge",
            "lambda_hist",
        ):
            need(math.isfinite(getattr(self, key)) and getattr(self, key) >= 0, key, "must be a weight >= 0")
        for key in ("lambda_edge", "lambda_hist"):
            need(
                getattr(self, key) == 0 or self.use_style_encoder,
                key,
                "weighs a term on the synthesized X-rays, which need the style encoder (use_style_encoder)",
            )
        need(self.adv_loss in ADV_LOSSES, "adv_loss", f"must be one of {', '.join(ADV_LOSSES)}")
        need(self.lpips_backbone in LPIPS_BACKBONES, "lpips_backbone", f"must be one of {', '.join(LPIPS_BACKBONES)}")

    def _check_optimisation(self) -> None:
        """Batch size, epochs, learning rate, Adam's betas, the EMA decay and the R1 interval."""
        for key in ("batch_size", "epochs", "r1_interval"):
            self._need(getattr(self, key) >= 1, key, "must be at least 1")
        self._need_positive("lr")
        self._need(0 <= self.ema_beta < 1, "ema_beta", "must lie in [0, 1)")
        self._need(
            len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas),
            "adam_betas",
            "must be two numbers in [0, 1)",
        )

    def _need_positive(self, key: str) -> None:
        """A CT2XError unless the float ``key`` is finite and > 0."""
        self._need(math.isfinite(getattr(self, key)) and getattr(self, key) > 0, key, "must be positive")


#: The CPU preset: a 32^3 CT, 128^2 images (12 synthesis layers: 8 content, 4 style), narrow networks.
_SMALL: dict[str, Any] = {
    "volume_size": 32,
    "voxel_spacing_mm": 4.0,
    "image_size": 128,
    "w_dim": 64,
    "ct_channels": (8, 16, 32, 32),
    "ct_latent_channels": 8,
    "style_channels": (8, 16, 32, 32, 64, 64),
    "content_channels": (8, 16, 32, 32),
    "pose_embed_dim": 32,
    "pam_mip_size": 32,
    "pam_patch_size": 8,
    "g_channel_base": 2048,
    "g_channel_max": 64,
    "d_channel_base": 1024,
    "d_channel_max": 64,
    "d_cmap_dim": 32,
    "batch_size": 4,
}


#: The product's preset: the small sizes at 128^2 with the projection path and the radiograph
#: discriminator (see :mod:`ct2x.models.projection`), trained on views drawn from continuous ranges.
_PROJECTED: dict[str, Any] = {
    **_SMALL,
    "projection_inputs": True,
    "use_xray_discriminator": True,
    "xray_d_channels": 32,
    "physics_anchor": True,
    "lambda_edge": 4.0,
    "lambda_hist": 2.0,
}


def _parse_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise CT2XError(f"config file {path} is not valid JSON: {error}") from None


def _parse_yaml(path: Path, text: str) -> Any:
    """Safe YAML, except that ``1e6`` (no dot) reads as a float, as in YAML 1.2 and JSON."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )
    try:
        return yaml.load(text, Loader=Loader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as error:
        raise CT2XError(f"config file {path} is not valid YAML: {' '.join(str(error).split())}") from None


def _field_names() -> set[str]:
    return {f.name for f in dataclasses.fields(CT2XConfig) if f.init}


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return tp.__name__


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the field type ``tp`` (ints pass as floats; lists become tuples)."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in typing.get_args(tp):
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        try:
            return _coerce(key, value, inner)
        except CT2XError:
            raise CT2XError(f"config key {key!r} must be {_type_name(tp)}, got {type(value).__name__}") from None
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise CT2XError(f"config key {key!r} must be {_type_name(tp)}, got {type(value).__name__}")
        item = typing.get_args(tp)[0]
        return tuple(_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value))
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, tp)
    if not ok:
        raise CT2XError(f"config key {key!r} must be {_type_name(tp)}, got {type(value).__name__}")
    return value
