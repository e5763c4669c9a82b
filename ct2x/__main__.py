"""``python -m ct2x`` (and ``PythonSlicer -m ct2x``) runs the command line."""

from ct2x.cli import main

raise SystemExit(main())
