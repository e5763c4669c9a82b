"""Arguments shared by the verbs: each built from a field of an options dataclass (:mod:`ct2x.options`, or
:class:`ct2x.data.prepare.PrepareSettings`), whose default and help text it takes, so that the command line
repeats neither; and the angle, geometry, backend and device arguments several verbs take."""

from __future__ import annotations

import argparse
import dataclasses
import textwrap
from pathlib import Path
from typing import Any

from ct2x.options import RENDER_BACKENDS, option_default, option_flag

#: A parser or an argument group of one.
Parser = argparse.ArgumentParser | argparse._ArgumentGroup


class LinesHelpFormatter(argparse.HelpFormatter):
    """argparse's help, except that the description and epilog keep their line breaks: each line is wrapped
    on its own, its continuation indented under the line's text (for lists such as the choices of an option)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        filled = []
        for line in text.splitlines():
            body = line.lstrip()
            if not body:
                filled.append("")
                continue
            lead = indent + line[: len(line) - len(body)]
            hang = lead + " " * _hanging(body)
            filled.append(textwrap.fill(body, width, initial_indent=lead, subsequent_indent=hang))
        return "\n".join(filled)


def _hanging(line: str) -> int:
    """Where a list line's text starts after its name (two spaces or more), else 0: e.g. ``name   text``."""
    gap = line.find("  ")
    if gap < 0:
        return 0
    return gap + len(line[gap:]) - len(line[gap:].lstrip(" "))


def _help(options: type, name: str) -> str:
    spec = {f.name: f for f in dataclasses.fields(options)}[name]
    return spec.metadata["help"]


def add_field(parser: Parser, options: type, name: str, **kwargs: Any) -> None:
    """Add the option of field ``name`` of the dataclass ``options``: its flag (:func:`ct2x.options.option_flag`),
    the field's default (a field without one is required) and help text. ``kwargs``: argparse's (``type``,
    ``nargs``, ``metavar``, ``action``, ``choices``)."""
    try:
        default = option_default(options, name)
    except KeyError:
        kwargs["required"] = True
    else:
        kwargs["default"] = list(default) if isinstance(default, tuple) else default  # argparse's nargs gives lists
    flag = option_flag(options, name)
    if "action" not in kwargs and "choices" not in kwargs:
        kwargs.setdefault("metavar", flag.lstrip("-").replace("-", "_").upper())  # the flag's, not the field's
    parser.add_argument(flag, dest=name, help=_help(options, name), **kwargs)


def add_positional(parser: Parser, options: type, name: str, **kwargs: Any) -> None:
    """Add field ``name`` of ``options`` as a positional argument, with the field's help text."""
    parser.add_argument(name, help=_help(options, name), **kwargs)


def options_from(args: argparse.Namespace, options: type, **values: Any) -> Any:
    """An ``options`` dataclass from the parsed ``args`` (every field the verb has an argument for; lists
    become tuples) and ``values``; its ``__post_init__`` checks them all."""
    given = {
        f.name: tuple(getattr(args, f.name)) if isinstance(getattr(args, f.name), list) else getattr(args, f.name)
        for f in dataclasses.fields(options)
        if hasattr(args, f.name)
    }
    return options(**{**given, **values})


def add_angle_arguments(parser: Parser, options: type) -> None:
    """``--angles`` and ``--secondary`` (degrees) of ``options``."""
    add_field(parser, options, "angles", type=float, nargs="+", metavar="DEG")
    add_field(parser, options, "secondary", type=float, nargs="+", metavar="DEG")


def add_isocenter_argument(parser: Parser, options: type) -> None:
    """``--isocenter L P S`` (mm) of ``options``."""
    add_field(parser, options, "isocenter", type=float, nargs=3, metavar=("L", "P", "S"))


def add_geometry_arguments(
    parser: argparse.ArgumentParser, options: type, defaults: str = "defaults: DeepDRR's mobile C-arm"
) -> None:
    """The C-arm of ``ct2x drr``: angles, distances, detector and isocenter, in one group whose title says
    where the ``defaults`` come from."""
    group = parser.add_argument_group(f"C-arm geometry (LPS, mm, degrees; {defaults})")
    add_angle_arguments(group, options)
    add_field(group, options, "sdd", type=float)
    add_field(group, options, "sid", type=float)
    add_field(group, options, "detector_size", type=int, nargs="+", metavar="PX")
    add_field(group, options, "pixel_mm", type=float, nargs="+", metavar="MM")
    add_isocenter_argument(group, options)


def add_backend_argument(parser: Parser, options: type) -> None:
    """``--backend``: the DRR renderer (:data:`ct2x.options.RENDER_BACKENDS`)."""
    add_field(parser, options, "backend", choices=RENDER_BACKENDS)


def add_device_argument(parser: Parser, options: type) -> None:
    """``--device``: the torch device (checked by :func:`ct2x.device.torch_device` when the verb runs)."""
    add_field(parser, options, "device")


def add_path(parser: Parser, options: type, name: str, **kwargs: Any) -> None:
    """A path option of ``options`` (a folder or a file)."""
    add_field(parser, options, name, type=Path, **kwargs)
