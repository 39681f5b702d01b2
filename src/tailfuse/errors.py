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
