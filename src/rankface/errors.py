"""The error a user can fix: bad input (a file, a folder, a setting), as opposed to a fault in rankface itself.

The `rankface` command prints a `UserError` as one line and exits with status 2; the traceback is shown only with
`--debug`. The message therefore has to stand alone: it names the file, line or setting that is wrong and what was
expected. It subclasses `ValueError`, so Python callers that catch `ValueError` keep working.
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(ValueError):
    """Bad input from the user; the message names what is wrong (file, line, field) and what was expected."""
