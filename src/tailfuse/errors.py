"""Errors a user can cause. The CLI prints them as one line, never as a traceback."""


class TailfuseError(Exception):
    """A mistake in a recipe, a path, a checkpoint or the data, explained in one message."""


class ConfigError(TailfuseError):
    """A recipe or override that does not fit the schema."""


class DataError(TailfuseError):
    """Data that is missing, corrupt or does not match what the recipe asks for."""


class CheckpointError(TailfuseError):
    """A checkpoint that is missing, unreadable or incompatible with the recipe."""


class TrainingError(TailfuseError):
    """Training that cannot go on, such as a loss that became NaN or infinite."""


def did_you_mean(name: str, choices, hint: str = "") -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to ``name``
    (difflib), else ``hint``."""
    import difflib

    matches = difflib.get_close_matches(
        str(name), [str(choice) for choice in choices], n=3, cutoff=0.6
    )
    if not matches:
        return hint
    return " (did you mean " + " or ".join(f"'{match}'" for match in matches) + "?)"
