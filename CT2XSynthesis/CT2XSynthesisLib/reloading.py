"""*Reload* in a module panel (developer mode) must reload the module's ``Lib`` package too.

Slicer's ``ScriptedLoadableModuleWidget.onReload`` re-executes only the module's main script;
its ``import CT2XSynthesisLib...`` statements would then find the old ``Lib`` modules in
``sys.modules``. :func:`forget_package` drops a package and its submodules from ``sys.modules``
first, so the re-executed script imports them afresh from the files on disk.
"""

from __future__ import annotations

import sys


def forget_package(name: str) -> list[str]:
    """Remove package ``name`` and every ``name.*`` submodule from ``sys.modules``; returns their names."""
    names = sorted(n for n in sys.modules if n == name or n.startswith(name + "."))
    for module in names:
        del sys.modules[module]
    return names
