"""Output folders of ``ct2x synthesize``, ``drr`` and ``evaluate`` hold one run, and refused runs leave nothing.

- A re-run into a folder (``--overwrite``; ``drr`` always writes into its folder) removes the files the
  previous run wrote, as its list ``OUT/.ct2x-outputs`` names them, and only those: a user's files,
  even one named like a view, stay.
- A second output command on a folder in use is refused at once, naming the process that holds it
  (a real second process holds the lock).
- ``train`` and ``prepare`` refused for bad input leave no lock file and no folder they made.
- The lock file goes when its holder releases it, and a process that waited for it still excludes
  a third one (three real processes).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import test_evaluate
import test_synthesize
from PIL import Image

from ct2x.cli import main

files = test_synthesize.files  # a random model, a phantom CT and a radiograph (module fixture)
inputs = test_evaluate.inputs  # a held-out dataset of two phantom CTs, radiographs, two models
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
DRR_FAST = ["--size", "24", "--pixel", "8", "--step", "0.5", "--imaging", "raw", "--photons", "0", "--backend", "torch"]
LIST = ".ct2x-outputs"


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (POSIX relative name -> SHA-256), hidden ones included."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _users_files(folder: Path) -> dict[str, bytes]:
    """A user's files in an output folder: notes, a picture named like a view, a file in a subfolder."""
    mine = {"notes.txt": b"my notes", "view07_LAO0_CRAN0.png": b"my own picture", "mine/keep.txt": b"keep"}
    for name, data in mine.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return mine


def test_synthesize_overwrite_leaves_only_the_new_run(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    """The issue's reproduction: 3 views in one style, then 1 view in another with --overwrite."""
    out = tmp_path / "out"
    base = ["synthesize", str(files["ct"]), "--model", str(files["model"]), "--out", str(out)]
    assert main([*base, "--style", str(files["xray"]), "--angles", "-30", "0", "30"]) == 0
    assert len(list(out.glob("view0*.dcm"))) == 3
    mine = _users_files(out)
    second = [*base, "--drr-style", "--angles", "0", "--format", "png,nrrd", "--overwrite"]
    assert main(second) == 0, capsys.readouterr().err
    written = {"view00_LAO0_CRAN0.png", "view00_LAO0_CRAN0.nrrd", "views.png", "strip.png", LIST}
    written |= {"view00_LAO0_CRAN0_coverage.png", "view00_LAO0_CRAN0_coverage.nrrd"}  # the view's CT coverage
    assert set(_tree(out)) == written | set(mine)  # no view of the first run, no lock, no temporary file
    assert all((out / name).read_bytes() == data for name, data in mine.items())
    assert Image.open(out / "views.png").width == 64 + 2 * 4  # one view on the sheet (ct2x.view_files)
    listed = (out / LIST).read_text(encoding="utf-8").splitlines()
    assert sorted(line for line in listed if not line.startswith("#")) == sorted(written - {LIST})


def test_a_drr_rerun_leaves_only_the_new_run(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "drr"
    base = ["drr", str(files["ct"]), *DRR_FAST, "--out", str(out)]
    assert main([*base, "--angles", "-30", "0", "30"]) == 0
    mine = _users_files(out)
    assert main([*base, "--angles", "0"]) == 0, capsys.readouterr().err
    written = {"view00_LAO0_CRAN0.png", "view00_LAO0_CRAN0.nrrd", "contact_sheet.png", LIST}
    written |= {"view00_LAO0_CRAN0_coverage.png", "view00_LAO0_CRAN0_coverage.nrrd"}  # the view's CT coverage
    assert set(_tree(out)) == written | set(mine)
    assert all((out / name).read_bytes() == data for name, data in mine.items())


def test_only_listed_files_inside_the_folder_are_removed(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    """A list edited to name files outside the folder (``..``, an absolute path, through a linked
    folder) removes none of them; the listed files inside go. A list that is not ct2x's is refused."""
    out, outside = tmp_path / "drr", tmp_path / "outside"
    outside.mkdir()
    victims = [outside / "victim.txt", tmp_path / "victim.txt"]
    for victim in victims:
        victim.write_text("not ct2x's")
    base = ["drr", str(files["ct"]), *DRR_FAST, "--out", str(out)]
    assert main([*base, "--angles", "30"]) == 0
    (out / "linked").symlink_to(outside, target_is_directory=True)
    with (out / LIST).open("a", encoding="utf-8") as listed:
        listed.write(f"../victim.txt\n{victims[0]}\nlinked/victim.txt\n")
    assert main([*base, "--angles", "0"]) == 0, capsys.readouterr().err
    assert all(victim.read_text() == "not ct2x's" for victim in victims)
    assert not (out / "view00_LAO30_CRAN0.nrrd").exists() and (out / "view00_LAO0_CRAN0.nrrd").is_file()
    (out / LIST).write_text("my own list of things\nview00_LAO0_CRAN0.nrrd\n", encoding="utf-8")
    before = _tree(out)
    capsys.readouterr()
    assert main([*base, "--angles", "0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ct2x: error:") and err.count("\n") == 1 and "is not ct2x's list" in err, err
    assert _tree(out) == before


@pytest.mark.usefixtures("one_thread")
def test_evaluate_overwrite_leaves_only_the_new_run(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch, capsys
) -> None:
    """An evaluation with an ablation, then one without it: the ablation's images go."""
    monkeypatch.setattr("ct2x.evaluation.evaluate.InceptionFeatures", test_evaluate._PixelFeatures)
    out = tmp_path / "report"
    argv = ["evaluate", "--model", str(inputs["model"]), "--data", str(inputs["data"]), "--xray", str(inputs["xray"])]
    argv += ["--out", str(out), "--styles", "2"]
    assert main([*argv, "--ablation", f"w/o PAM={inputs['no_pam']}"]) == 0
    ablation = sorted(p.name for p in (out / "images").iterdir() if p.name.endswith("w-o-pam"))
    assert len(ablation) == 1
    mine = _users_files(out)
    assert main([*argv, "--overwrite"]) == 0, capsys.readouterr().err
    assert not (out / "images" / ablation[0]).exists()
    index = test_evaluate.json.loads((out / "images" / "index.json").read_text(encoding="utf-8"))["methods"]
    images = {f for names in index.values() for f in names}
    figures = {"report.md", "metrics.json", "strip.png", "style_grid.png", "ct_a_vs_b.png", "images/index.json", LIST}
    assert set(_tree(out)) == images | figures | set(mine)
    assert all((out / name).read_bytes() == data for name, data in mine.items())


HOLDER = (
    "import sys, time\nfrom pathlib import Path\nfrom ct2x.folder_lock import folder_lock\n"
    "with folder_lock(Path(sys.argv[1]), sys.argv[2], wait=False):\n"
    "    print('held', flush=True)\n    time.sleep(120)\n"
)


def _command(verb: str, files: dict[str, Path], inputs: dict[str, Path], out: Path) -> list[str]:
    if verb == "synthesize":
        return ["synthesize", str(files["ct"]), "--model", str(files["model"]), "--drr-style", "--overwrite"]
    if verb == "drr":
        return ["drr", str(files["ct"]), *DRR_FAST, "--angles", "0"]
    return ["evaluate", "--model", str(inputs["model"]), "--data", str(inputs["data"]), "--xray", str(inputs["xray"]),
            "--styles", "2", "--overwrite"]  # fmt: skip


@pytest.mark.parametrize("verb", ["synthesize", "drr", "evaluate"])
def test_an_output_folder_in_use_is_refused_naming_its_holder(
    verb: str, files: dict[str, Path], inputs: dict[str, Path], tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr("ct2x.evaluation.evaluate.InceptionFeatures", test_evaluate._PixelFeatures)  # were it to run
    out = tmp_path / "out"
    out.mkdir()
    _users_files(out)
    job = f"ct2x {verb}"
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), job], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert child.stdout.readline().strip() == "held"
        before = _tree(out)
        assert main([*_command(verb, files, inputs, out), "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("ct2x: error:") and err.count("\n") == 1, err
        assert f"process {child.pid} ({job}) is using {out}" in err and "choose another --out" in err, err
        assert _tree(out) == before  # nothing written, nothing removed
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


def test_a_refused_train_leaves_no_lock_and_no_folder(tmp_path: Path, capsys) -> None:
    missing = str(tmp_path / "missing")
    argv = ["train", "--data", missing, "--xray", missing, "--config", "small", "--steps", "1"]
    assert main([*argv, "--out", str(tmp_path / "new" / "run")]) == 1
    assert "not a prepared dataset" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # neither the run folder nor the parent it made
    users = tmp_path / "users"  # a folder the user made stays, as it was
    users.mkdir()
    assert main([*argv, "--out", str(users)]) == 1
    assert list(users.iterdir()) == []


def test_a_refused_prepare_leaves_no_lock_and_no_folder(tmp_path: Path, capsys) -> None:
    cts = tmp_path / "cts"
    cts.mkdir()
    (cts / "corrupt.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 this is not a volume")
    argv = ["prepare", "--ct", str(cts), "--angles", "0", "--size", "16", "--grid", "16", "--photons", "0"]
    assert main([*argv, "--out", str(tmp_path / "data")]) == 1
    assert "could be prepared" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()
    foreign = tmp_path / "foreign"  # a folder of another tool: refused, and left as it was
    foreign.mkdir()
    (foreign / "manifest.json").write_text('{"format": "another tool"}', encoding="utf-8")
    before = _tree(foreign)
    assert main([*argv, "--out", str(foreign)]) == 1
    assert "not a CT2X dataset manifest" in capsys.readouterr().err
    assert _tree(foreign) == before and [p.name for p in foreign.iterdir()] == ["manifest.json"]


WAITER = (
    "import sys\nfrom pathlib import Path\nfrom ct2x.folder_lock import folder_lock\n"
    "with folder_lock(Path(sys.argv[1]), 'ct2x prepare', wait=sys.argv[2] == 'wait', create=True):\n"
    "    print('held', flush=True)\n    sys.stdin.readline()\n"
)


def test_a_waiter_still_excludes_others_after_the_holder_removed_the_lock_file(tmp_path: Path) -> None:
    """The holder made the folder and leaves it empty: on release it removes the lock file and the
    folder. The process that waited for it takes the lock again in a new folder, and a third
    process is refused while it holds it; at its end no lock file and no folder are left."""
    from ct2x.errors import CT2XError
    from ct2x.folder_lock import folder_lock

    out = tmp_path / "made" / "out"

    def start(mode: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", WAITER, str(out), mode],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
        )  # fmt: skip

    first = start("refuse")
    second = None
    try:
        assert first.stdout.readline().strip() == "held"
        second = start("wait")
        assert "ct2x: waiting for process" in second.stderr.readline()
        first.communicate("\n", timeout=60)  # releases: its lock file and folder go
        assert first.returncode == 0
        assert second.stdout.readline().strip() == "held"
        with pytest.raises(CT2XError, match=f"process {second.pid} \\(ct2x prepare\\) is using"):
            with folder_lock(out, "ct2x prepare", wait=False):
                pass
        second.communicate("\n", timeout=60)
        assert second.returncode == 0
        assert not (tmp_path / "made").exists()  # the folders it made were empty: removed with the lock
    finally:
        for job in (first, second):
            if job is not None and job.poll() is None:
                job.kill()
                job.wait()
