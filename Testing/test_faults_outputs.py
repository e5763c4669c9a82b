"""Every verb checks its ``--out`` folder the same way (``ct2x.atomic.check_output_folder``), before
its work starts: a file given as ``--out`` is called a file (no ``--overwrite`` hint), and a folder
that cannot be created is refused before any model, CT or dataset is read. The inputs given here
do not exist, so any work started before the check would fail with another message.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ct2x.cli import main


def _verbs(missing: Path, out: Path) -> dict[str, list[str]]:
    m = str(missing)
    return {
        "synthesize": ["synthesize", m, "--model", f"{m}.safetensors", "--drr-style", "--out", str(out)],
        "evaluate": ["evaluate", "--model", f"{m}.safetensors", "--data", m, "--xray", m, "--out", str(out)],
        "study make": ["study", "make", "--report", m, "--out", str(out)],
        "demo": ["demo", "--out", str(out)],
        "train": ["train", "--data", m, "--xray", m, "--config", "small", "--out", str(out)],
    }


VERBS = ["synthesize", "evaluate", "study make", "demo", "train"]  # drr: test_cli; prepare: below


@pytest.mark.parametrize("verb", VERBS)
def test_a_file_as_out_is_called_a_file(verb: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "results.png"
    out.write_bytes(b"an image the user keeps")
    assert main(_verbs(tmp_path / "missing", out)[verb]) == 1
    err = capsys.readouterr().err
    assert err == f"ct2x: error: --out {out} is a file, not a folder: choose another --out\n", err
    assert out.read_bytes() == b"an image the user keeps"


@pytest.mark.parametrize("verb", VERBS)
def test_an_out_folder_that_cannot_be_made_is_refused_before_the_work(verb: str, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder would be")
    assert main(_verbs(tmp_path / "missing", blocker / "out")[verb]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ct2x: error:") and err.count("\n") == 1, err
    assert f"output folder {blocker / 'out'}" in err and "choose another --out" in err, err


def test_prepare_checks_out_after_finding_the_cts(tmp_path: Path, capsys) -> None:
    """prepare first says when --ct holds no CT (nothing is written then), else checks --out like the others."""
    cts = tmp_path / "cts"
    cts.mkdir()
    (cts / "a.nii.gz").write_bytes(b"not read before --out is checked")
    out = tmp_path / "data"
    out.write_text("a file")
    assert main(["prepare", "--ct", str(cts), "--out", str(out)]) == 1
    assert capsys.readouterr().err == f"ct2x: error: --out {out} is a file, not a folder: choose another --out\n"


def test_an_existing_folder_needs_overwrite(tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    out.mkdir()
    assert main(_verbs(tmp_path / "missing", out)["evaluate"]) == 1
    assert "exists: add --overwrite" in capsys.readouterr().err
