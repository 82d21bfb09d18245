"""The errors a user can cause. Each carries a one-line message that says what is wrong, where, and
what to do; the CLI prints it and exits non-zero, the HTTP API turns it into a 4xx."""


class StefRayError(Exception):
    """Base of every error a user can cause (bad data, bad config, missing model)."""

    exit_code = 2


class ConfigError(StefRayError):
    """A configuration file or option is invalid."""


class DataError(StefRayError):
    """Input data cannot be used as given (missing column, unparsable value, gap, ...)."""


class InsufficientHistoryError(DataError):
    """Too little history to fit or to forecast."""


class BundleError(StefRayError):
    """A model bundle is missing, incomplete or of an unsupported format version."""


class ModelNotFoundError(BundleError):
    """No model where one was expected."""


class ServiceUnavailableError(StefRayError):
    """An external service (MLflow, InfluxDB, Ray) cannot be reached."""

    exit_code = 3
