"""``ct2x study``: the blinded page, the key beside it, scoring, bad input, and the page in a real browser.

The report folder is built here the way ``ct2x evaluate`` writes it (``images/index.json`` and
8-bit PNGs per method). The browser test drives Debian's chromium through Selenium's
chromedriver: it loads the page from disk, rates every image, reloads (answers survive in
``localStorage``), exports, and scores the exported file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ct2x.cli import main
from ct2x.evaluation.study import IMAGE_INDEX, IMAGE_INDEX_FORMAT

METHODS = ["Real radiograph", "DRR (physics)", "Styled DRR (histogram-matched)", "CT2X-GAN", "w/o PAM"]


def _report(root: Path, per_method: int = 4) -> Path:
    """A report folder with ``per_method`` small random PNGs per method and its image index."""
    rng = np.random.default_rng(0)
    index = {}
    for number, method in enumerate(METHODS):
        folder = root / "images" / f"{number:02d}"
        folder.mkdir(parents=True)
        index[method] = []
        for n in range(per_method):
            Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(folder / f"{n:04d}.png")
            index[method].append(f"images/{number:02d}/{n:04d}.png")
    (root / IMAGE_INDEX).write_text(json.dumps({"format": IMAGE_INDEX_FORMAT, "methods": index}))
    return root


def _answers(path: Path, key: dict, score_of, rater: str = "r1", skip: int = 0) -> Path:
    """An answer file like the page exports, rating all items but the last ``skip``."""
    items = key["items"][: len(key["items"]) - skip]
    ratings = {item["id"]: score_of(item) for item in items}
    answers = {"format": "ct2x-study-answers", "study": key["study_id"], "rater": rater, "ratings": ratings}
    path.write_text(json.dumps({**answers, "digest": key.get("digest")}))
    return path


def _score(item: dict) -> int:
    """A rater who gives each method its own score (its place in METHODS, 1-5)."""
    return METHODS.index(item["method"]) + 1


def test_make_writes_a_blinded_page_and_the_key_beside_it(tmp_path: Path, capsys) -> None:
    report = _report(tmp_path / "report")
    out = tmp_path / "study"
    assert main(["study", "make", "--report", str(report), "--out", str(out), "--per-method", "3"]) == 0
    key = json.loads((out / "key.json").read_text())
    assert len(key["items"]) == 3 * len(METHODS)
    assert {m: sum(i["method"] == m for i in key["items"]) for m in METHODS} == dict.fromkeys(METHODS, 3)
    assert [i["id"] for i in key["items"]] == [f"q{n:02d}" for n in range(1, 16)]
    assert [i["method"] for i in key["items"]] != sorted(i["method"] for i in key["items"])  # shuffled
    page = (out / "study.html").read_text()
    for secret in [*METHODS, *(item["image"] for item in key["items"])]:
        assert secret not in page, secret
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)  # short words may occur in base64 by chance
    for secret in ["Real", "DRR", "GAN", "PAM", "images/", ".png", "radiograph", "method"]:
        assert secret not in text, secret
    assert page.count("data:image/png;base64,") == 15 and "http" not in page.replace("http-equiv", "")
    assert main(["study", "make", "--report", str(report), "--out", str(out)]) == 1  # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err


def test_score_gives_the_mean_and_ci_per_method_and_reports_incomplete_files(tmp_path: Path, capsys) -> None:
    out = tmp_path / "study"
    assert main(["study", "make", "--report", str(_report(tmp_path / "report")), "--out", str(out)]) == 0
    key = json.loads((out / "key.json").read_text())
    full = _answers(tmp_path / "a.json", key, _score, "alice")
    noisy = _answers(tmp_path / "b.json", key, lambda item: 1 + (int(item["id"][1:]) % 5), "bob", skip=2)
    capsys.readouterr()
    assert main(["study", "score", str(out), str(full), str(noisy)]) == 0
    printed = capsys.readouterr().out
    table = json.loads((out / "table4.json").read_text())
    assert table["raters"] == 2 and table["ratings"] == 2 * len(key["items"]) - 2
    assert table["incomplete"] == [{"file": str(noisy), "rater": "bob", "rated": 18, "of": 20}]
    for row in table["rows"]:
        values = [_score(i) for i in key["items"] if i["method"] == row["method"]]
        values += [1 + (int(i["id"][1:]) % 5) for i in key["items"][:-2] if i["method"] == row["method"]]
        half = 1.96 * np.std(values, ddof=1) / np.sqrt(len(values))
        assert row["mean"] == pytest.approx(np.mean(values)) and row["ratings"] == len(values)
        assert row["ci95"] == pytest.approx([np.mean(values) - half, np.mean(values) + half])
    assert "Table 4" in printed and "Incomplete" in printed and (out / "table4.md").is_file()


def test_bad_study_input_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / IMAGE_INDEX).write_text(json.dumps({"format": IMAGE_INDEX_FORMAT, "methods": {"x": []}}))
    out = tmp_path / "study"
    assert main(["study", "make", "--report", str(_report(tmp_path / "report")), "--out", str(out)]) == 0
    key = json.loads((out / "key.json").read_text())
    answers = _answers(tmp_path / "a.json", key, _score)
    wrong_study = tmp_path / "w.json"
    wrong_study.write_text(answers.read_text().replace(key["study_id"], "0" * 16))
    out_of_scale = _answers(tmp_path / "s.json", key, lambda item: 7)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "key.json").write_text("{not json")
    no_items = tmp_path / "no_items"
    no_items.mkdir()
    (no_items / "key.json").write_text(json.dumps({"format": "ct2x-study-key", "study_id": "x", "items": []}))
    cases = [
        (["study", "make", "--report", str(empty), "--out", str(tmp_path / "s1")], "no images"),
        (["study", "make", "--report", str(tmp_path), "--out", str(tmp_path / "s2")], "does not exist"),
        (["study", "make", "--report", str(empty), "--out", str(tmp_path / "s3"), "--per-method", "0"], "at least 1"),
        (["study", "score", str(broken), str(answers)], "cannot be read as JSON"),
        (["study", "score", str(no_items), str(answers)], "lists no images"),
        (["study", "score", str(out), str(wrong_study)], "not this one"),
        (["study", "score", str(out), str(out_of_scale)], "1-5"),
        (["study", "score", str(out), str(tmp_path / "missing.json")], "does not exist"),
    ]
    for argv, message in cases:
        assert main(argv) == 1, argv
        error = capsys.readouterr().err.strip()
        assert error.startswith("ct2x: error:") and message in error and "\n" not in error, error
    assert not any((tmp_path / name).exists() for name in ("s1", "s2", "s3"))


def _page_data(page: Path) -> dict:
    """The study data the page embeds (its ``study-data`` script)."""
    found = re.search(r'<script id="study-data" type="application/json">(.*?)</script>', page.read_text(), re.S)
    return json.loads(found.group(1).replace("<\\/", "</"))


def _make(tmp_path: Path, name: str = "study", seed: int = 0) -> tuple[Path, dict]:
    out = tmp_path / name
    report = tmp_path / "report"
    if not report.exists():
        _report(report)
    assert main(["study", "make", "--report", str(report), "--out", str(out), "--seed", str(seed)]) == 0
    return out, json.loads((out / "key.json").read_text())


def test_each_rater_counts_once_and_duplicate_answer_files_are_dropped_with_one_warning(tmp_path: Path) -> None:
    out, key = _make(tmp_path)
    alice = _answers(tmp_path / "alice.json", key, _score, "alice")
    again = tmp_path / "alice-again.json"  # a second export of the same answers (another time stamp)
    again.write_text(json.dumps({**json.loads(alice.read_text()), "rater": " Alice ", "exported": "later"}))
    bob = _answers(tmp_path / "bob.json", key, lambda item: 3, "bob")
    before = {p: p.read_bytes() for p in (alice, again, bob)}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("ct2x")), "study", "score", str(out), str(alice), str(alice), str(again)]
        + [str(bob)],
        capture_output=True,
        encoding="utf-8",
    )
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if line.startswith("ct2x: warning:")]
    assert len(warned) == 1 and str(alice) in warned[0] and str(again) in warned[0], done.stderr
    assert "Traceback" not in done.stderr
    table = json.loads((out / "table4.json").read_text())
    assert table["raters"] == 2 and table["ratings"] == 2 * len(key["items"])
    alone = {row["method"]: row for row in table["rows"]}
    for method in METHODS:  # the same rows as alice and bob scored once each
        values = [_score(i) for i in key["items"] if i["method"] == method] + [3] * 4
        assert alone[method]["ratings"] == len(values) and alone[method]["mean"] == pytest.approx(np.mean(values))
    assert {p: p.read_bytes() for p in (alice, again, bob)} == before


def test_two_different_answer_sets_of_one_rater_are_refused_naming_both_files(tmp_path: Path, capsys) -> None:
    out, key = _make(tmp_path)
    first = _answers(tmp_path / "first.json", key, _score, "alice", skip=5)
    second = _answers(tmp_path / "second.json", key, _score, "Alice")
    capsys.readouterr()
    assert main(["study", "score", str(out), str(first), str(second)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("ct2x: error:") and "\n" not in error, error
    assert str(first) in error and str(second) in error and "alice" in error.lower(), error
    assert not (out / "table4.json").exists()


def test_page_key_and_answers_are_tied_by_a_digest(tmp_path: Path, capsys) -> None:
    out, key = _make(tmp_path)
    assert isinstance(key.get("digest"), str) and len(key["digest"]) == 64
    data = _page_data(out / "study.html")
    assert data["digest"] == key["digest"] and "digest: data.digest" in (out / "study.html").read_text()
    answers = _answers(tmp_path / "a.json", key, _score, "alice")
    assert main(["study", "score", str(out), str(answers)]) == 0
    capsys.readouterr()
    for table in ("table4.json", "table4.md"):
        (out / table).unlink()

    # the key edited after the page was made: two items of different methods swap their methods
    edited = tmp_path / "edited"
    shutil.copytree(out, edited)
    items = key["items"]
    other = next(n for n, item in enumerate(items) if item["method"] != items[0]["method"])
    swapped = json.loads(json.dumps(key))
    swapped["items"][0]["method"], swapped["items"][other]["method"] = items[other]["method"], items[0]["method"]
    (edited / "key.json").write_text(json.dumps(swapped, indent=1))

    # a key of another page (made from the same report with another seed) put beside this page, and
    # answers to that other page
    other_out, other_key = _make(tmp_path, "other", seed=1)
    mixed = tmp_path / "mixed"
    shutil.copytree(out, mixed)
    shutil.copy(other_out / "key.json", mixed / "key.json")
    other_answers = _answers(tmp_path / "o.json", other_key, _score, "alice")

    # answers carrying the study id but another page's digest, and answers without a digest
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps({**json.loads(answers.read_text()), "digest": other_key["digest"]}))
    old = tmp_path / "old.json"
    old.write_text(json.dumps({k: v for k, v in json.loads(answers.read_text()).items() if k != "digest"}))

    # a key of the version without a digest
    old_key = tmp_path / "old_key"
    shutil.copytree(out, old_key)
    (old_key / "key.json").write_text(
        json.dumps({k: v for k, v in key.items() if k not in ("digest", "salt")} | {"version": 1})
    )
    cases = [
        (edited, answers, ["edited", str(edited / "key.json")]),
        (mixed, other_answers, ["another page", str(mixed / "study.html")]),
        (out, forged, ["another page", str(forged)]),
        (out, old, ["no digest", str(old)]),
        (old_key, answers, ["no digest", str(old_key / "key.json"), "ct2x study make"]),
    ]
    for folder, answer_file, words in cases:
        assert main(["study", "score", str(folder), str(answer_file)]) == 1, folder
        error = capsys.readouterr().err.strip()
        assert error.startswith("ct2x: error:") and "\n" not in error, error
        assert all(word in error for word in words), (words, error)
        assert not (folder / "table4.json").exists()


def test_make_on_a_malformed_image_index_is_a_one_line_error_naming_the_index(tmp_path: Path, capsys) -> None:
    report = _report(tmp_path / "report")
    index = report / IMAGE_INDEX
    good = json.loads(index.read_text())
    (tmp_path / "outside.png").write_bytes((report / good["methods"][METHODS[0]][0]).read_bytes())
    (report / "notes.txt").write_text("not an image")

    def listing(methods: object) -> str:
        return json.dumps({"format": IMAGE_INDEX_FORMAT, "methods": methods})

    cases = [
        ("{not json", "cannot be read as JSON"),
        (json.dumps([1, 2]), "not a JSON object"),
        (json.dumps({"methods": good["methods"]}), "format"),
        (json.dumps({"format": IMAGE_INDEX_FORMAT}), "methods"),
        (listing([1]), "methods"),
        (listing({"a": 5}), "'a'"),
        (listing({"a": "images/00/0000.png"}), "'a'"),
        (listing({"a": [1, 2]}), "'a'"),
        (listing({"a": [None]}), "'a'"),
        (listing({"a": ["images/00/9999.png"]}), "9999.png"),
        (listing({"a": ["../outside.png"]}), "outside.png"),
        (listing({"a": [str(tmp_path / "outside.png")]}), "outside"),
        (listing({"a": ["images"]}), "'images'"),
        (listing({"a": ["notes.txt"]}), "notes.txt"),
    ]
    for n, (text, word) in enumerate(cases):
        index.write_text(text)
        out = tmp_path / f"s{n}"
        assert main(["study", "make", "--report", str(report), "--out", str(out)]) == 1, text
        error = capsys.readouterr().err.strip()
        assert error.startswith("ct2x: error:") and "\n" not in error, (text, error)
        assert word in error and str(index) in error, (text, error)
        assert not out.exists(), text
        assert index.read_text() == text


def _browser_tools() -> tuple[str, str]:
    """Paths of chromium and chromedriver, or skip with the reason."""
    pytest.importorskip("selenium", reason="the browser test needs selenium (pip install 'ct2x[dev]')")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("the browser test needs chromium and chromedriver (apt-get install chromium chromium-driver)")
    return chromium, driver


def test_the_page_works_in_a_headless_browser(tmp_path: Path) -> None:
    chromium, chromedriver = _browser_tools()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    out = tmp_path / "study"
    assert main(["study", "make", "--report", str(_report(tmp_path / "report", 2)), "--out", str(out)]) == 0
    key = json.loads((out / "key.json").read_text())
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = Options()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    browser = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        browser.get((out / "study.html").as_uri())
        items = key["items"]
        assert len(browser.find_elements(By.CSS_SELECTOR, ".item img")) == len(items)
        half = len(items) // 2

        def rate(item: dict) -> None:
            browser.find_element(By.CSS_SELECTOR, f'input[name="rate-{item["id"]}"][value="{_score(item)}"]').click()

        for item in items[:half]:
            rate(item)
        browser.refresh()  # the answers so far are kept in the browser
        for item in items[:half]:
            radio = browser.find_element(By.CSS_SELECTOR, f'input[name="rate-{item["id"]}"][value="{_score(item)}"]')
            assert radio.is_selected()
        for item in items[half:]:
            rate(item)
        assert browser.find_element(By.ID, "status").text == f"rated {len(items)} of {len(items)}"
        browser.find_element(By.ID, "export").click()  # no name yet: refused with a message
        assert "name" in browser.find_element(By.ID, "error").text
        browser.find_element(By.ID, "rater").send_keys("Rater One")
        browser.find_element(By.ID, "export").click()
        deadline = time.time() + 30
        while time.time() < deadline and not [p for p in downloads.glob("*.json")]:
            time.sleep(0.2)
        exported = sorted(downloads.glob("*.json"))
    finally:
        browser.quit()
    assert len(exported) == 1 and not list(downloads.glob("*.crdownload")), os.listdir(downloads)
    answers = json.loads(exported[0].read_text())
    assert answers["rater"] == "Rater One" and len(answers["ratings"]) == len(items)
    assert main(["study", "score", str(out), str(exported[0])]) == 0
    table = json.loads((out / "table4.json").read_text())
    assert table["raters"] == 1 and table["incomplete"] == []
    assert {row["method"]: row["mean"] for row in table["rows"]} == {m: METHODS.index(m) + 1.0 for m in METHODS}
