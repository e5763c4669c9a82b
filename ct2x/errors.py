"""The one exception type that reaches users.

Every problem a user can fix (a missing file, a bad angle, a CT that is not 3D) is raised
as :class:`CT2XError` with a one-line message that names what is wrong and how to fix it.
The command line prints that line and exits non-zero instead of showing a traceback.
"""


class CT2XError(Exception):
    """A user-facing error; ``str(error)`` is the complete message."""
