"""``ct2x study``: a blinded user study of realism (paper Table 4), run in any web browser.

``make_study`` draws images of every method of a ``ct2x evaluate`` report (its
``images/index.json``: real radiographs, physics DRRs, styled DRRs, the untrained control,
the model, its ablations) and writes

* ``study.html``: one self-contained page (the images are embedded as PNG data; no server, no
  network, no external script). It shows the images in a random order, each with a 1-5 rating
  of "resembles a real X-ray". Answers are kept in the browser's ``localStorage`` (they survive
  a reload) until *Export answers* saves them as a JSON file. Images are named only by their
  position (``q01``, ``q02``, ...): the page holds no method name and no file name.
* ``key.json``: which item came from which method and image (give raters only the page).

The page, the key and the answers are tied by a digest: the key stores a random salt and the
SHA-256 of its study id, salt and items (the blinded assignment: which ``qNN`` is which method and
image); the page embeds that digest (it reveals nothing of the assignment without the salt) and
every exported answer file carries it back. Scoring refuses a key whose items no longer match its
digest (edited after ``make``: methods swapped, images changed), a key beside a page of another
study, answers exported from another page, and keys and answers without a digest (written before
the digest existed: make the study again).

``score_study`` reads the key and the exported answer files and writes Table 4: per method,
the mean score and a 95 % confidence interval (normal approximation, mean ± 1.96 sd / √n over
all ratings of that method), with the raters and ratings counted and incomplete answer files
reported (their ratings are used). Each rater counts once, by name (case and spacing ignored):
a file that repeats answers already read (the same file named twice, or a second export of the
same ratings) is dropped with one warning naming it; two different answer sets under one name
are refused, naming both files (score the one the rater means, e.g. their last export); identical
ratings under two different names are counted but warned about.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import re
import secrets
import uuid
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from ct2x.atomic import atomic_path
from ct2x.errors import CT2XError

#: The image index ``ct2x evaluate`` writes in its report folder (method -> image files), and its format tag.
IMAGE_INDEX = "images/index.json"
IMAGE_INDEX_FORMAT = "ct2x-evaluation-images"
KEY = "key.json"
PAGE = "study.html"
KEY_FORMAT = "ct2x-study-key"
ANSWERS_FORMAT = "ct2x-study-answers"
QUESTION = "How much does this image resemble a real X-ray?"
SCALE = {1: "not at all", 2: "a little", 3: "somewhat", 4: "mostly", 5: "like a real X-ray"}


def _read_json(path: Path, what: str) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CT2XError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CT2XError(f"{what} {path} cannot be read as JSON ({error})") from None
    if not isinstance(value, dict):
        raise CT2XError(f"{what} {path} is not a JSON object")
    return value


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_index(report: Path) -> tuple[Path, dict[str, list[str]]]:
    """The image index of the ``ct2x evaluate`` report folder ``report``: its path and its methods (method -> image
    files relative to ``report``), every file checked."""
    path = report / IMAGE_INDEX
    index = _read_json(path, "the image index of the report")
    again = "run ct2x evaluate again to rewrite it"
    if index.get("format") != IMAGE_INDEX_FORMAT:
        raise CT2XError(
            f"the image index {path} is not a ct2x evaluate image index (its format is {_short(index.get('format'))}, "
            f"not {IMAGE_INDEX_FORMAT!r}): {again}"
        )
    methods = index.get("methods")
    if not isinstance(methods, dict):
        raise CT2XError(
            f"the image index {path} needs 'methods', an object of method -> image files; "
            f"it holds {_short(methods)}: {again}"
        )
    root = report.resolve()
    for method, files in methods.items():
        if not isinstance(files, list) or not all(isinstance(name, str) and name for name in files):
            raise CT2XError(
                f"the image index {path} lists {_short(files)} for the method {method!r}, not a list of image "
                f"files (paths relative to the report): {again}"
            )
        for name in files:
            image = report / name
            if Path(name).is_absolute() or not image.resolve().is_relative_to(root):
                problem = "is not a path inside the report"
            elif not image.is_file():
                problem = "is not a file" if image.exists() else "does not exist"
            else:
                continue
            raise CT2XError(
                f"the image index {path} lists {name!r} for the method {method!r}, which {problem}: {again}"
            )
    return path, methods


def _png_data(path: Path, index: Path) -> str:
    """The image re-encoded as a grey PNG (pixels only, no metadata) in a data URL."""
    try:
        with Image.open(path) as image:
            grey = image.convert("L")
    except (OSError, ValueError) as error:
        raise CT2XError(
            f"the image index {index} lists {path}, which cannot be read as an image ({error}): "
            "run ct2x evaluate again to rewrite the report"
        ) from None
    buffer = io.BytesIO()
    grey.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def make_study(report: Path, out: Path, per_method: int = 10, seed: int = 0) -> Path:
    """Write ``out/study.html`` and ``out/key.json`` from the images of ``report`` (module docstring)."""
    if isinstance(per_method, bool) or not isinstance(per_method, int) or per_method < 1:
        raise CT2XError(f"--per-method must be at least 1, got {per_method!r}")
    index, methods = read_index(report)
    rng = np.random.default_rng(seed)
    drawn: list[tuple[str, str]] = []
    for method, files in methods.items():
        picks = rng.permutation(len(files))[: min(per_method, len(files))]
        drawn += [(method, files[i]) for i in sorted(picks)]
    if not drawn:
        raise CT2XError(f"the report {report} lists no images: a study page needs at least 1 image")
    order = rng.permutation(len(drawn))
    width = max(2, len(str(len(drawn))))
    items = [{"id": f"q{n + 1:0{width}d}", "method": drawn[i][0], "image": drawn[i][1]} for n, i in enumerate(order)]
    pictures = [{"id": item["id"], "src": _png_data(report / item["image"], index)} for item in items]
    study_id = uuid.uuid4().hex[:16]
    salt = secrets.token_hex(16)
    digest = _digest(study_id, salt, items)
    out.mkdir(parents=True, exist_ok=True)
    key = {
        "format": KEY_FORMAT,
        "version": 2,
        "study_id": study_id,
        "salt": salt,
        "digest": digest,
        "report": str(report),
        "items": items,
    }
    with atomic_path(out / KEY) as tmp:
        tmp.write_text(json.dumps(key, indent=1), encoding="utf-8")
    page = out / PAGE
    with atomic_path(page) as tmp:
        tmp.write_text(_page(study_id, digest, pictures), encoding="utf-8")
    return page


def _digest(study_id: str, salt: str, items: list) -> str:
    """SHA-256 of the blinded assignment (module docstring); the salt keeps the page's copy from revealing it."""
    canonical = json.dumps({"study_id": study_id, "salt": salt, "items": items}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _page(study_id: str, digest: str, pictures: list[dict]) -> str:
    data = json.dumps(
        {"study": study_id, "digest": digest, "format": ANSWERS_FORMAT, "items": pictures, "scale": SCALE}
    )
    return _TEMPLATE.replace("__QUESTION__", QUESTION).replace("__DATA__", data.replace("</", "<\\/"))


def _page_digest(page: Path) -> str:
    """The digest embedded in a study page."""
    try:
        text = page.read_text(encoding="utf-8")
        found = re.search(r'<script id="study-data" type="application/json">(.*?)</script>', text, re.S)
        digest = json.loads(found.group(1)).get("digest") if found else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        digest = None
    if not isinstance(digest, str):
        raise CT2XError(
            f"the study page {page} beside the key holds no study digest (not a page of this version of ct2x study "
            "make): keep the page and the key written together"
        )
    return digest


def _read_key(folder: Path) -> dict:
    key = _read_json(folder / KEY, "the study key")
    items = key.get("items")
    broken = f"the study key {folder / KEY} is broken"
    if key.get("format") != KEY_FORMAT or not isinstance(key.get("study_id"), str):
        raise CT2XError(f"{broken}: it is not a ct2x study key (run ct2x study make again)")
    if not isinstance(items, list) or not items:
        raise CT2XError(f"{broken}: it lists no images")
    if not all(
        isinstance(i, dict) and isinstance(i.get("id"), str) and isinstance(i.get("method"), str) for i in items
    ):
        raise CT2XError(f"{broken}: every item needs an id and a method")
    if len({i["id"] for i in items}) != len(items):
        raise CT2XError(f"{broken}: item ids repeat")
    digest, salt = key.get("digest"), key.get("salt")
    if not isinstance(digest, str) or not isinstance(salt, str):
        raise CT2XError(
            f"the study key {folder / KEY} has no digest (written by an older ct2x study make, version "
            f"{key.get('version')!r}): nothing ties it to its page and the answers; make the study again with "
            "ct2x study make and send raters the new page"
        )
    if _digest(key["study_id"], salt, items) != digest:
        raise CT2XError(
            f"the study key {folder / KEY} was edited after ct2x study make: its items (which image is which "
            "method) no longer match its digest, e.g. methods swapped; put back the key written with the page"
        )
    page = folder / PAGE
    if page.exists() and _page_digest(page) != digest:
        raise CT2XError(
            f"the study key {folder / KEY} belongs to another page than {page} (the page's digest is "
            f"{_page_digest(page)[:12]}..., the key's {digest[:12]}...): put the key written with this page beside it"
        )
    return key


def _read_answers(path: Path, key: dict) -> tuple[str, dict[str, int]]:
    answers = _read_json(path, "the answer file")
    if answers.get("format") != ANSWERS_FORMAT:
        raise CT2XError(f"{path} is not an answer file exported from a ct2x study page")
    if answers.get("study") != key["study_id"]:
        raise CT2XError(f"{path} answers study {answers.get('study')!r}, not this one ({key['study_id']})")
    digest = answers.get("digest")
    if not isinstance(digest, str):
        raise CT2XError(
            f"{path} has no digest of its study page (exported from a page of an older ct2x study make): it cannot "
            "be tied to the key; raters must answer on a page made by this version of ct2x study make"
        )
    if digest != key["digest"]:
        raise CT2XError(
            f"{path} answers another page (its digest is {digest[:12]}..., the key's {key['digest'][:12]}...): "
            "score it with the key written with the page it came from"
        )
    ratings = answers.get("ratings")
    if not isinstance(ratings, dict):
        raise CT2XError(f"{path} holds no ratings")
    known = {i["id"] for i in key["items"]}
    unknown = sorted(set(ratings) - known)
    if unknown:
        raise CT2XError(f"{path} rates images this study does not have ({', '.join(unknown[:3])})")
    bad = [k for k, v in ratings.items() if not (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 5)]
    if bad:
        raise CT2XError(f"{path}: ratings are whole numbers 1-5, got {ratings[bad[0]]!r} for {bad[0]}")
    return str(answers.get("rater") or path.stem), ratings


def score_study(folder: Path, answer_files: list[Path]) -> str:
    """Table 4 from the answers (module docstring); writes ``table4.md`` and ``table4.json`` into ``folder``."""
    key = _read_key(folder)
    method_of = {i["id"]: i["method"] for i in key["items"]}
    methods = list(dict.fromkeys(i["method"] for i in key["items"]))
    scores: dict[str, list[int]] = {m: [] for m in methods}
    raters, incomplete, dropped, twins = [], [], [], []
    seen: dict[str, tuple[Path, str]] = {}  # rater's name (case and spacing ignored) -> first file, answers' digest
    owner: dict[str, tuple[Path, str]] = {}  # answers' digest -> first file, rater
    for path in answer_files:
        rater, ratings = _read_answers(path, key)
        name = " ".join(rater.split()).casefold()
        identity = hashlib.sha256(json.dumps(sorted(ratings.items())).encode("utf-8")).hexdigest()
        if name in seen:
            first, first_identity = seen[name]
            if first_identity != identity:
                raise CT2XError(
                    f"{first} and {path} both answer as the rater {rater!r} with different ratings: a rater counts "
                    "once, so score only the file the rater means (e.g. their last export)"
                )
            same = Path(first).resolve() == Path(path).resolve()
            dropped.append(f"{path} (named twice)" if same else f"{path} (the same answers as {first})")
            continue
        seen[name] = (path, identity)
        if identity in owner and ratings:
            twins.append(f"{owner[identity][0]} ({owner[identity][1]!r}) and {path} ({rater!r})")
        owner.setdefault(identity, (path, rater))
        raters.append(rater)
        for item, value in ratings.items():
            scores[method_of[item]].append(value)
        if len(ratings) < len(method_of):
            incomplete.append({"file": str(path), "rater": rater, "rated": len(ratings), "of": len(method_of)})
    if dropped:
        warnings.warn(
            f"each rater counts once: dropped {len(dropped)} duplicate answer file(s): {'; '.join(dropped)}",
            stacklevel=2,
        )
    if twins:
        warnings.warn(
            f"identical ratings under different rater names, both counted (score one if they are one rater's): "
            f"{'; '.join(twins)}",
            stacklevel=2,
        )
    rows = []
    for method in methods:
        values = np.array(scores[method], dtype=np.float64)
        mean = float(values.mean()) if len(values) else None
        half = 1.96 * float(values.std(ddof=1)) / math.sqrt(len(values)) if len(values) > 1 else None
        rows.append(
            {
                "method": method,
                "mean": mean,
                "ci95": None if half is None else [mean - half, mean + half],
                "ratings": len(values),
                "images": sum(1 for m in method_of.values() if m == method),
            }
        )
    table = {
        "study_id": key["study_id"],
        "digest": key["digest"],
        "raters": len(raters),
        "ratings": sum(len(v) for v in scores.values()),
        "incomplete": incomplete,
        "dropped": dropped,
        "rows": rows,
    }
    text = _table_markdown(table)
    with atomic_path(folder / "table4.json") as tmp:
        tmp.write_text(json.dumps(table, indent=1), encoding="utf-8")
    with atomic_path(folder / "table4.md") as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return text


def _table_markdown(table: dict) -> str:
    lines = [
        "## Table 4: user study (1-5, 'resembles a real X-ray')",
        "",
        f"{table['raters']} rater(s), {table['ratings']} ratings; 95 % CI: mean ± 1.96 sd / √n over the ratings.",
        "",
        "| Method | mean score ↑ | 95 % CI | ratings | images |",
        "|---|---|---|---|---|",
    ]
    for row in table["rows"]:
        mean = "n/a" if row["mean"] is None else f"{row['mean']:.2f}"
        ci = "n/a" if row["ci95"] is None else f"{row['ci95'][0]:.2f} - {row['ci95'][1]:.2f}"
        lines.append(f"| {row['method']} | {mean} | {ci} | {row['ratings']} | {row['images']} |")
    for entry in table["incomplete"]:
        lines.append("")
        lines.append(f"Incomplete: {entry['file']} (rater {entry['rater']}): {entry['rated']} of {entry['of']} rated.")
    for entry in table["dropped"]:
        lines.append("")
        lines.append(f"Dropped (a rater counts once): {entry}.")
    return "\n".join(lines)


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>X-ray realism study</title>
<style>
body { font-family: sans-serif; margin: 1em auto; max-width: 60em; background: #f4f4f4; }
.item { display: inline-block; margin: 0.5em; padding: 0.5em; background: white; border-radius: 4px;
        vertical-align: top; }
.item img { width: 256px; height: 256px; display: block; image-rendering: auto; background: black; }
.item.done { outline: 2px solid #4a4; }
.rating label { margin-right: 0.4em; }
#status { font-weight: bold; }
#error { color: #b00; }
</style>
</head>
<body>
<h1>X-ray realism study</h1>
<p>For each image: __QUESTION__ 1 = not at all, 5 = like a real X-ray. Your answers are saved in this
browser as you go (you may close the page and come back). When you have rated every image, enter your
name and press <b>Export answers</b>, then send the downloaded file back.</p>
<p><label>Your name: <input id="rater" type="text" size="24"></label>
<button id="export" type="button">Export answers</button>
<span id="status"></span> <span id="error"></span></p>
<div id="items"></div>
<script id="study-data" type="application/json">__DATA__</script>
<script>
"use strict";
const data = JSON.parse(document.getElementById("study-data").textContent);
const storageKey = "ct2x-study-" + data.study;
function load() {
  try { return JSON.parse(localStorage.getItem(storageKey)) || {rater: "", ratings: {}}; }
  catch (e) { return {rater: "", ratings: {}}; }
}
const state = load();
function save() { localStorage.setItem(storageKey, JSON.stringify(state)); }
function update() {
  const done = Object.keys(state.ratings).length;
  document.getElementById("status").textContent = "rated " + done + " of " + data.items.length;
  for (const item of data.items) {
    document.getElementById("item-" + item.id).classList.toggle("done", item.id in state.ratings);
  }
}
const list = document.getElementById("items");
for (const item of data.items) {
  const box = document.createElement("div");
  box.className = "item";
  box.id = "item-" + item.id;
  const img = document.createElement("img");
  img.src = item.src;
  img.alt = "image " + item.id;
  box.appendChild(img);
  const caption = document.createElement("div");
  caption.textContent = item.id;
  box.appendChild(caption);
  const rating = document.createElement("div");
  rating.className = "rating";
  for (let score = 1; score <= 5; score++) {
    const label = document.createElement("label");
    label.title = data.scale[score];
    const input = document.createElement("input");
    input.type = "radio";
    input.name = "rate-" + item.id;
    input.value = String(score);
    input.checked = state.ratings[item.id] === score;
    input.addEventListener("change", () => { state.ratings[item.id] = score; save(); update(); });
    label.appendChild(input);
    label.appendChild(document.createTextNode(String(score)));
    rating.appendChild(label);
  }
  box.appendChild(rating);
  list.appendChild(box);
}
const rater = document.getElementById("rater");
rater.value = state.rater || "";
rater.addEventListener("input", () => { state.rater = rater.value; save(); });
document.getElementById("export").addEventListener("click", () => {
  const error = document.getElementById("error");
  if (!state.rater.trim()) { error.textContent = "Enter your name first."; return; }
  error.textContent = "";
  const answers = {format: data.format, study: data.study, digest: data.digest, rater: state.rater.trim(),
                   ratings: state.ratings, items: data.items.length, exported: new Date().toISOString()};
  const blob = new Blob([JSON.stringify(answers, null, 1)], {type: "application/json"});
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = "answers-" + data.study + "-" + state.rater.trim().replace(/[^A-Za-z0-9_-]+/g, "_") + ".json";
  document.body.appendChild(link);
  link.click();
  link.remove();
});
update();
</script>
</body>
</html>
"""
