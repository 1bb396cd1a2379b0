"""The one exception type for mistakes a user can make in a trial config or on disk."""


class ConfigError(ValueError):
    """A user error: bad config value, unknown name, missing dataset root.

    The CLI prints its message on one line and exits non-zero, without a traceback.
    """
