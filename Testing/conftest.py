"""Shared fixtures: small phantoms built in code, and the real data in ../shared/data when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ct2x.volume import CTVolume

#: Real CTs and radiographs laid beside the checkout (never committed; see its README).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_file(relative: str) -> Path:
    """Path to a file of ../shared/data, or skip the calling test with the reason."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"needs the real data {path} (../shared/data beside the checkout), which is absent here")
    return path


def body_phantom(size: int = 48, spacing: float = 2.0) -> CTVolume:
    """An axis-aligned LPS phantom: a water cylinder (0 HU) along S with a bone rod (1000 HU)
    on the patient's left and a soft-tissue ball (50 HU) anterior, in air (-1000 HU).

    The volume is centred on the LPS origin; ``spacing`` is in mm.
    """
    k, j, i = np.meshgrid(*(np.arange(size, dtype=np.float32),) * 3, indexing="ij")
    c = (size - 1) / 2
    x, y, z = (i - c) * spacing, (j - c) * spacing, (k - c) * spacing  # LPS mm
    radius = 0.4 * size * spacing
    hu = np.full((size, size, size), -1000.0, dtype=np.float32)
    hu[x**2 + y**2 <= radius**2] = 0.0
    hu[(x - 0.5 * radius) ** 2 + y**2 <= (0.15 * radius) ** 2] = 1000.0
    hu[x**2 + (y + 0.5 * radius) ** 2 + z**2 <= (0.2 * radius) ** 2] = 50.0
    origin = np.full(3, -c * spacing)
    return CTVolume(hu, np.full(3, spacing), origin, np.eye(3))


@pytest.fixture
def phantom() -> CTVolume:
    return body_phantom()
