"""Errors a user can fix. The CLI prints them as one line, without a traceback."""


class HamachoError(Exception):
    """Base class of every error caused by input, configuration or environment."""


class ConfigError(HamachoError):
    """A configuration key or value is invalid."""


class DatasetError(HamachoError):
    """The dataset folder, an image or a mask cannot be used."""


class BackboneError(HamachoError):
    """Backbone weights cannot be found, downloaded or loaded."""


class ModelFileError(HamachoError):
    """A model file is missing, foreign, corrupt or from a newer version."""
