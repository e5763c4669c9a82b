"""The CT2XSynthesis logic refuses a label map node and NaN voxels with the module's error (a
CT2XError), on a real MRML scene (PyPI ``slicer-core``), leaving the scene as it was."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs the MRML library of PyPI's slicer-core (pip install slicer-core)")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "CT2XSynthesis"))

from CT2XSynthesisLib.logic import SynthesisLogic, SynthesisParameters  # noqa: E402

from ct2x.errors import CT2XError  # noqa: E402

IJK_TO_RAS = np.diag([-2.0, -2.0, 2.0, 1.0])


def _renderer(ct, views):  # noqa: ANN001, ANN202
    return np.zeros((len(views), *views[0].detector_shape), np.float32)


def _synthesize(node) -> None:  # noqa: ANN001
    SynthesisLogic(_renderer).synthesize(node, SynthesisParameters(angles=((0.0, 0.0),), detector_pixels=16))


def _volume_count(scene) -> int:  # noqa: ANN001
    return scene.GetNumberOfNodesByClass("vtkMRMLVolumeNode")


def test_a_label_map_node_is_refused(scene) -> None:
    labels = np.zeros((12, 12, 12), np.int16)
    labels[3:9, 3:9, 3:9] = 2  # a segment, label 2
    node = slicer.util.addVolumeFromArray(
        labels, IJK_TO_RAS, name="segmentation", nodeClassName="vtkMRMLLabelMapVolumeNode"
    )
    before = _volume_count(scene)
    with pytest.raises(CT2XError, match="'segmentation' is a label map"):
        _synthesize(node)
    assert _volume_count(scene) == before
    assert np.array_equal(slicer.util.arrayFromVolume(node), labels)


@pytest.mark.parametrize("bad", [np.nan, -np.inf], ids=["nan", "inf"])
def test_nan_voxels_in_a_ct_node_are_refused(scene, bad: float) -> None:
    hu = np.full((12, 12, 12), -1000.0, np.float32)
    hu[4:8, 4:8, 4:8] = 40.0
    hu[6, 6, 6] = bad
    node = slicer.util.addVolumeFromArray(hu, IJK_TO_RAS, name="CT")
    before = _volume_count(scene)
    with pytest.raises(CT2XError, match="'CT' holds 1 NaN or infinite voxel"):
        _synthesize(node)
    assert _volume_count(scene) == before


def test_a_finite_ct_node_still_synthesizes(scene) -> None:
    hu = np.full((12, 12, 12), -1000.0, np.float32)
    node = slicer.util.addVolumeFromArray(hu, IJK_TO_RAS, name="CT")
    before = _volume_count(scene)
    _synthesize(node)
    assert _volume_count(scene) == before + 1
