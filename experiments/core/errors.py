"""Errors that mean "the user must fix something", printed without a traceback.

Every message names the file, line, key or value at fault and what to do.
The command-line entry points catch ``UserError`` and exit with status 2.
"""


class UserError(Exception):
    """Bad input: a message for a person, not a stack trace."""


class DataError(UserError):
    """A missing, corrupt or malformed dataset file or split."""


class ConfigError(UserError):
    """A configuration key or value that cannot work."""


class CheckpointError(UserError):
    """A checkpoint that is missing, truncated or not one of ours."""


class StorageError(UserError):
    """A file that cannot be written: a full disk, a read-only folder."""


class RunFolderError(UserError):
    """A run folder in use by another process, or holding a run that a fresh start would overwrite."""
