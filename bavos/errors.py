"""Exceptions raised by bavos. Every message says what was wrong and what to do about it."""


class BavosError(Exception):
    """Base class of every error bavos reports to a user."""


class InputError(BavosError):
    """A video or frame folder that cannot be read."""


class WeightsError(BavosError):
    """Backbone weights that cannot be found or do not fit the model."""


class CheckpointError(BavosError):
    """A correlator checkpoint that cannot be loaded."""


class ConfigError(BavosError):
    """Options that do not make sense together."""


class OutputError(BavosError):
    """Outputs that cannot be written."""


class EvalError(BavosError):
    """Predictions or ground truth that cannot be evaluated."""


class TrainError(BavosError):
    """A training run that cannot go on (e.g. the loss became NaN)."""


class ResourceError(BavosError):
    """A run that would not fit this machine (memory), stopped before the work."""
