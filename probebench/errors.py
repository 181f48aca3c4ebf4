"""Errors a user can fix. The CLI prints them as one line and exits with code 2, never a traceback."""


class UserError(Exception):
    """Bad input: a wrong name, a missing file, a malformed config. The message names the fix."""


class DatasetMissing(UserError):
    """A named dataset is not under the data root (or there is no data root): the message says how to get it.
    Not an error in the data itself: `probebench doctor` lists it as missing, not broken."""


class WeightsUnavailable(UserError):
    """Weights are neither cached nor downloadable here; the message says which file and how to provide it."""


def suggest(name: str, known, what: str, otherwise: str | None = None) -> UserError:
    """'unknown <what> <name>; did you mean ...' with close matches among `known` (names, or a dict keyed by
    them), else `otherwise` (default: the known names)."""
    import difflib

    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else otherwise or f"known: {', '.join(known)}"
    return UserError(f"unknown {what} {name!r}; {hint}")
