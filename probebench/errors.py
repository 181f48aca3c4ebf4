"""Errors a user can fix. The CLI prints them as one line and exits with code 2, never a traceback."""


class UserError(Exception):
    """Bad input: a wrong name, a missing file, a malformed config. The message names the fix."""


class WeightsUnavailable(UserError):
    """Weights are neither cached nor downloadable here; the message says which file and how to provide it."""
