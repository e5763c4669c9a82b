"""``ct2x prepare``: CT folders -> resumable dataset of DRRs and MIPs at the training poses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_phantom_ct
from safetensors.numpy import load_file

from ct2x.cli import main
from ct2x.data.prepare import PrepareSettings, find_cts, prepare_dataset
from ct2x.drr import mip, render_drr
from ct2x.errors import CT2XError
from ct2x.geometry import CArm
from ct2x.volume import preprocess, read_ct

SMALL = PrepareSettings(angles=(-60.0, 0.0, 60.0), detector_size=24, pixel_mm=6.0, step=0.5, photons=0, grid_size=16)


@pytest.fixture
def ct_tree(tmp_path: Path) -> Path:
    root = tmp_path / "ctspine1k"
    write_phantom_ct(root / "case1" / "a.nii.gz", 24)
    write_phantom_ct(root / "case2" / "b.nii.gz", 20, shift_mm=30.0)
    (root / "case3").mkdir()
    (root / "case3" / "corrupt.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 this is not a volume")
    return root


def test_prepare_writes_dataset_skips_bad_ct_and_resumes(ct_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    report = prepare_dataset(ct_tree, out, SMALL, workers=2, progress=False)
    assert len(report.done) == 2 and len(report.failed) == 1 and "corrupt.nii.gz" in report.failed[0][0]
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["settings"]["angles"] == [-60.0, 0.0, 60.0]
    assert sorted(Path(v["source"]).name for v in manifest["volumes"]) == ["a.nii.gz", "b.nii.gz"]
    for entry in manifest["volumes"]:
        tensors = load_file(out / "volumes" / entry["file"])
        assert tensors["ct"].shape == (16, 16, 16) and tensors["ct"].dtype == np.int16
        assert tensors["drr"].shape == (3, 24, 24) and tensors["mip"].shape == (3, 24, 24)
        assert tensors["poses"].shape == (3, 25)
        assert np.isfinite(tensors["drr"]).all() and tensors["drr"].max() > 0.5
        # The stored images are the DRRs and MIPs at the stored poses around the grid's centre.
        grid = preprocess(read_ct(entry["source"]), size=16)
        iso = tuple(grid.center_lps)
        shape, spacing = (24, 24), (SMALL.pixel_mm, SMALL.pixel_mm)
        carms = [CArm.from_pose(p, shape, spacing, iso) for p in tensors["poses"].astype(np.float64)]
        assert [round(c.primary) for c in carms] == [-60, 0, 60]
        expected = render_drr(read_ct(entry["source"]), carms, step=SMALL.step).numpy()
        np.testing.assert_allclose(tensors["drr"], expected, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(tensors["mip"], mip(grid, carms, step=SMALL.step).numpy(), atol=0.1)
        np.testing.assert_allclose(tensors["ct"], np.round(grid.array), atol=0.5)
    # Re-running finds both done by hash and only retries the broken one.
    again = prepare_dataset(ct_tree, out, SMALL, workers=1, progress=False)
    assert len(again.skipped) == 2 and not again.done and len(again.failed) == 1


def test_prepare_refuses_other_settings_on_existing_dataset(ct_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    (ct_tree / "case3" / "corrupt.nii.gz").unlink()
    prepare_dataset(ct_tree, out, SMALL, workers=1, progress=False)
    other = PrepareSettings(angles=(0.0,), detector_size=24, pixel_mm=6.0, step=0.5, photons=0, grid_size=16)
    with pytest.raises(CT2XError, match="other settings"):
        prepare_dataset(ct_tree, out, other, progress=False)


def test_find_cts_errors(tmp_path: Path) -> None:
    with pytest.raises(CT2XError, match="does not exist"):
        find_cts(tmp_path / "missing")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("no CT here")
    with pytest.raises(CT2XError, match="no CT found"):
        find_cts(tmp_path)


def test_prepare_command_line(ct_tree: Path, tmp_path: Path, capsys) -> None:
    (ct_tree / "case3" / "corrupt.nii.gz").unlink()
    argv = ["prepare", "--ct", str(ct_tree), "--out", str(tmp_path / "d"), "--angles", "0", "--size", "16"]
    code = main([*argv, "--grid", "16", "--step", "0.5", "--photons", "0", "--workers", "1"])
    assert code == 0, capsys.readouterr().err
    assert "prepared 2 CTs" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["prepare", "--ct", str(empty), "--out", str(tmp_path / "e")]) == 1
    assert "no CT found" in capsys.readouterr().err
