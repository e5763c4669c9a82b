"""The one exception type that reaches users.

Every problem a user can fix (a missing file, a bad angle, a CT that is not 3D) is raised
as :class:`CT2XError` with a one-line message that names what is wrong and how to fix it.
The command line prints that line and exits non-zero instead of showing a traceback.
"""

import math
import numbers


class CT2XError(Exception):
    """A user-facing error; ``str(error)`` is the complete message."""


def positive_finite(what: str, value: object, unit: str, *, quantity: str = "finite number of") -> float:
    """``value`` as a float when it is a real number in (0, inf), else a CT2XError naming ``what`` (the option or
    setting) and ``unit`` (e.g. ``"voxels"``, ``"mm"``, with a hint such as ``"voxels (e.g. 0.1)"``).

    The message reads ``"{what} must be a positive {quantity} {unit}, got {value!r}"``; ``quantity``
    is e.g. ``"distance in"`` for a length in mm. ``inf`` and booleans are refused, NaN fails the range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
        raise CT2XError(f"{what} must be a positive {quantity} {unit}, got {value!r}")
    return float(value)
