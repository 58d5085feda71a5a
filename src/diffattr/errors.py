"""Exceptions raised by diffattr. Every error names the bad value and what would be valid."""


class DiffattrError(Exception):
    """Base class of every error raised on purpose by diffattr."""


class ConfigError(DiffattrError, ValueError):
    """A configuration value is missing, unknown or out of range."""


class DataError(DiffattrError, ValueError):
    """A dataset, split or subset cannot be built from the given inputs."""


class FeatureMismatchError(DiffattrError, ValueError):
    """Two stored matrices disagree on provenance (model, projection, row order, ...)."""


class CorruptFileError(DiffattrError, OSError):
    """A stored file is truncated, unreadable or lacks the attributes it must carry."""


class TrainingError(DiffattrError, RuntimeError):
    """Training cannot continue (for example the loss became NaN)."""


class DiskFullError(DiffattrError, OSError):
    """An output could not be written because its file system is full (nothing was written)."""
