"""GUI-free logic of the CT2XTraining Slicer module (no ``qt``, no ``ScriptedLoadableModule``)."""

import sys
from pathlib import Path

# A source checkout keeps the core package ``ct2x`` beside the module folders, while a built
# extension copies it next to the module scripts: make it importable in both layouts.
_CHECKOUT = Path(__file__).resolve().parents[2]
if (_CHECKOUT / "ct2x" / "__init__.py").is_file() and str(_CHECKOUT) not in sys.path:
    sys.path.append(str(_CHECKOUT))
