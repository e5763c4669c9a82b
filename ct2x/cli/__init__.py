"""The ``ct2x`` command line: one verb per capability of the core, one module per verb.

Each verb's module (:mod:`ct2x.cli.drr`, ``prepare``, ``train``, ``synthesize``, ``evaluate``, ``study``,
``demo``) adds its parser, built from its options dataclass (:mod:`ct2x.options`: the defaults and help
texts are the fields'), and holds its run function, which imports the heavy modules (torch) when it runs:
``ct2x --help`` needs no torch. Shared arguments: :mod:`ct2x.cli.arguments`.

Every problem the user can fix is printed as one line ``ct2x: error: ...`` with exit
status 1 (argument errors: argparse's message, exit 2); warnings print as
``ct2x: warning: ...``. No traceback reaches the user for bad input.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from ct2x import __version__
from ct2x.cli import demo, drr, evaluate, prepare, study, synthesize, train
from ct2x.errors import CT2XError

#: The verbs, in the order ``ct2x --help`` lists them.
VERBS = (drr, prepare, train, synthesize, evaluate, study, demo)


def build_parser() -> argparse.ArgumentParser:
    """The ``ct2x`` parser: each verb's subparser sets ``run``, the function that runs it."""
    parser = argparse.ArgumentParser(
        prog="ct2x",
        description="CT2X: realistic multi-view X-ray images from CT scans (CT2X-GAN) and DeepDRR-grade DRRs.",
    )
    parser.add_argument("--version", action="version", version=f"ct2x {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in VERBS:
        verb.add_parser(verbs)
    return parser


def _format_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001 (warnings API)
    return f"ct2x: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _format_warning
    try:
        args.run(args)
    except CT2XError as error:
        print(f"ct2x: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ct2x: interrupted", file=sys.stderr)
        return 130
    return 0
