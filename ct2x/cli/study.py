"""``ct2x study``: a blinded reader study of realism (paper Table 4): ``make`` the page, ``score`` the answers."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(verbs: argparse._SubParsersAction) -> None:
    """Add ``ct2x study make`` and ``ct2x study score`` to the verbs."""
    study = verbs.add_parser(
        "study",
        help="a blinded user study of realism (paper Table 4): make the page, score the answers",
        description=(
            "ct2x study make writes a self-contained HTML page (no server, no network) that shows images of several "
            "methods from a ct2x evaluate report in a blinded random order, each rated 1-5 for 'resembles a real "
            "X-ray'; answers stay in the browser until exported as a JSON file. Which image came from which method "
            "is written only to key.json beside the page: send raters study.html alone. ct2x study score reads the "
            "exported answers and writes Table 4 (mean score and 95% CI per method)."
        ),
    )
    actions = study.add_subparsers(dest="study_verb", required=True, metavar="ACTION")
    make = actions.add_parser(
        "make",
        help="write study.html and key.json from an evaluation report",
        description="Write DIR/study.html (send this to raters) and DIR/key.json (keep it) from the images of a "
        "ct2x evaluate report.",
    )
    make.add_argument("--report", type=Path, required=True, help="report folder written by ct2x evaluate")
    make.add_argument("--out", type=Path, required=True, help="study folder (must not exist, unless --overwrite)")
    make.add_argument("--per-method", type=int, default=10, help="images per method, drawn at random (default: 10)")
    make.add_argument("--seed", type=int, default=0, help="seed of the draw and the order (default: 0)")
    make.add_argument("--overwrite", action="store_true", help="write into an existing study folder")
    make.set_defaults(run=run_make)
    score = actions.add_parser(
        "score",
        help="score exported answers: Table 4 (mean and 95%% CI per method)",
        description="Read DIR/key.json and the raters' exported answer files; print Table 4 and write DIR/table4.md "
        "and DIR/table4.json. Incomplete answer files are counted and reported; each rater counts once (repeated "
        "answers are dropped with a warning); a key edited after make, or answers from another page, are refused.",
    )
    score.add_argument("dir", type=Path, help="study folder written by ct2x study make")
    score.add_argument("answers", type=Path, nargs="+", help="answer files exported from study.html")
    score.set_defaults(run=run_score)


def run_make(args: argparse.Namespace) -> None:
    """Write the study page and its key."""
    from ct2x.atomic import check_output_folder
    from ct2x.evaluation.study import make_study

    check_output_folder(args.out, args.overwrite, create=False)
    page = make_study(args.report, args.out, args.per_method, args.seed)
    print(f"wrote {page} (send it to the raters) and {page.with_name('key.json')} (keep it: it names the methods)")


def run_score(args: argparse.Namespace) -> None:
    """Print and write Table 4 from the exported answers."""
    from ct2x.evaluation.study import score_study

    table = score_study(args.dir, args.answers)
    print(table)
    print(f"wrote {args.dir / 'table4.md'} and {args.dir / 'table4.json'}")
