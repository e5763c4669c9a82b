"""Faults around ``ct2x prepare`` datasets: nothing lost, nothing silently wrong.

Two prepares into one folder at once lose no CT (two real processes), a re-run lists again the
volume files a manifest misses and renders again a truncated one, train and evaluate name a
damaged volume and a dataset of another format version, a full disk while writing the manifest
keeps the previous one, and a prepare in which a CT failed exits non-zero.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_phantom_ct as _write_ct
from PIL import Image
from test_prepare import SMALL

import ct2x.atomic
from ct2x.cli import main
from ct2x.config import CT2XConfig
from ct2x.data.dataset import CTViewDataset
from ct2x.data.prepare import prepare_dataset
from ct2x.errors import CT2XError

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
CONFIG = CT2XConfig.from_dict({"preset": "small", "image_size": 64, "batch_size": 2, "lpips_backbone": "random"})


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def _sources(out: Path) -> list[str]:
    return sorted(Path(v["source"]).name for v in _manifest(out)["volumes"])


@pytest.fixture
def two_cts(tmp_path: Path) -> Path:
    root = tmp_path / "cts"
    _write_ct(root / "a.nii.gz", 20)
    _write_ct(root / "b.nii.gz", 16, shift_mm=30.0)
    return root


@pytest.fixture
def xray(tmp_path: Path) -> Path:
    folder = tmp_path / "xray"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for n in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(folder / f"{n}.png")
    return folder


def test_two_prepares_into_one_folder_at_once_lose_no_ct(tmp_path: Path) -> None:
    """The second waits for the first, then reads the manifest the first wrote (the Slicer Prepare button
    can start a second job while one runs)."""
    for name, size in (("a", 20), ("b", 16)):
        _write_ct(tmp_path / name / f"{name}.nii.gz", size)
    out = tmp_path / "data"
    options = ["--angles", "0", "--size", "16", "--grid", "16", "--step", "0.5", "--photons", "0", "--workers", "1"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "encoding": "utf-8", "errors": "replace"}
    jobs = [
        subprocess.Popen(
            [sys.executable, "-m", "ct2x", "prepare", "--ct", str(tmp_path / n), "--out", str(out), *options],
            env=ENV,
            **pipes,
        )
        for n in ("a", "b")
    ]
    errors = [job.communicate(timeout=600)[1] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], [err[-1000:] for err in errors]
    assert _sources(out) == ["a.nii.gz", "b.nii.gz"]
    assert sorted(p.name for p in (out / "volumes").iterdir()) == sorted(v["file"] for v in _manifest(out)["volumes"])


def test_a_rerun_lists_again_the_volume_files_the_manifest_misses(two_cts: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    prepare_dataset(two_cts, out, SMALL, progress=False)
    manifest = _manifest(out)
    lost = manifest["volumes"].pop()  # as a run killed between a volume file and the manifest leaves it
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    stamp = (out / "volumes" / lost["file"]).stat().st_mtime_ns
    again = prepare_dataset(two_cts, out, SMALL, progress=False)
    assert len(again.skipped) == 2 and not again.done  # found on disk, not rendered again
    assert _sources(out) == ["a.nii.gz", "b.nii.gz"]
    assert (out / "volumes" / lost["file"]).stat().st_mtime_ns == stamp


def test_a_truncated_volume_is_named_by_train_and_evaluate_and_prepared_again(
    two_cts: Path, xray: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "data"
    prepare_dataset(two_cts, out, SMALL, progress=False)
    damaged = out / "volumes" / _manifest(out)["volumes"][0]["file"]
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size - 1000])
    # train: one line naming the file (before any model is built)
    argv = ["train", "--data", str(out), "--xray", str(xray), "--config", "small", "--out", str(tmp_path / "run")]
    assert main([*argv, "--steps", "1", "--workers", "0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ct2x: error:") and err.count("\n") == 1 and damaged.name in err and "damaged" in err, err
    assert "ct2x prepare again" in err
    # evaluate reads its held-out data through the same dataset class
    with pytest.raises(CT2XError, match=f"prepared volume .*{damaged.name} is damaged"):
        CTViewDataset(out, xray, CONFIG)
    # a re-run of prepare does not trust the file: it says so and renders it again
    with pytest.warns(UserWarning, match=f"{damaged.name} is damaged"):
        again = prepare_dataset(two_cts, out, SMALL, progress=False)
    assert len(again.done) == 1 and len(again.skipped) == 1
    assert len(CTViewDataset(out, xray, CONFIG).files) == 2


def test_a_manifest_of_another_format_version_says_what_it_is(two_cts: Path, xray: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    prepare_dataset(two_cts, out, SMALL, progress=False)
    manifest = _manifest(out)
    (out / "manifest.json").write_text(json.dumps({**manifest, "version": 2}), encoding="utf-8")
    with pytest.raises(CT2XError, match="format 'ct2x-dataset' version 2; this ct2x reads 'ct2x-dataset' version 1"):
        CTViewDataset(out, xray, CONFIG)  # train and evaluate both read a dataset this way
    (out / "manifest.json").write_text(json.dumps({**manifest, "format": "something-else"}), encoding="utf-8")
    with pytest.raises(CT2XError, match="format 'something-else'") as error:
        CTViewDataset(out, xray, CONFIG)
    assert "lists no prepared CT" not in str(error.value)


def test_disk_full_while_writing_the_manifest_keeps_the_previous_one(
    two_cts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "data"
    (two_cts / "b.nii.gz").rename(tmp_path / "b.nii.gz")
    prepare_dataset(two_cts, out, SMALL, progress=False)
    before = (out / "manifest.json").read_bytes()
    (tmp_path / "b.nii.gz").rename(two_cts / "b.nii.gz")
    flush = ct2x.atomic._flush_to_disk

    def full_disk(path: Path) -> None:  # ENOSPC at the atomic-write layer, for the manifest only
        if path.name.startswith(".manifest."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        flush(path)

    monkeypatch.setattr(ct2x.atomic, "_flush_to_disk", full_disk)
    with pytest.raises(CT2XError, match="manifest.json: No space left on device; the previous manifest is kept"):
        prepare_dataset(two_cts, out, SMALL, progress=False)
    assert (out / "manifest.json").read_bytes() == before
    assert not [p for p in out.rglob(".*") if p.name != ".ct2x.lock"]  # no temporary file left
    monkeypatch.undo()
    again = prepare_dataset(two_cts, out, SMALL, progress=False)  # b's volume was written: listed, not rendered
    assert len(again.skipped) == 2 and _sources(out) == ["a.nii.gz", "b.nii.gz"]


def test_a_killed_prepares_temporary_files_are_removed(two_cts: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    prepare_dataset(two_cts, out, SMALL, progress=False)
    stale = [out / ".manifest.a1b2c3d4.json", out / "volumes" / ".a-0123456789ab.x9y8z7w6.safetensors"]
    for path in stale:
        path.write_bytes(b"half a file")
    prepare_dataset(two_cts, out, SMALL, progress=False)
    assert not [p for p in stale if p.exists()]


def test_prepare_exits_nonzero_when_a_ct_failed(two_cts: Path, tmp_path: Path, capsys) -> None:
    (two_cts / "corrupt.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 this is not a volume")
    argv = ["prepare", "--ct", str(two_cts), "--out", str(tmp_path / "d"), "--angles", "0", "--size", "16"]
    assert main([*argv, "--grid", "16", "--step", "0.5", "--photons", "0", "--workers", "1"]) == 1
    captured = capsys.readouterr()
    assert "prepared 2 CTs" in captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("ct2x: error:")]
    assert len(errors) == 1 and "1 of 3 CTs could not be prepared" in errors[0], captured.err
    assert "corrupt.nii.gz" in captured.err and len(_manifest(tmp_path / "d")["volumes"]) == 2
