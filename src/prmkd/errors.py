"""Errors a user can act on. The CLI prints them as one line, without a traceback."""


class PrmkdError(Exception):
    """Base class of every error that is the user's input, not a bug."""


class ConfigError(PrmkdError):
    """A configuration file or `--set` override is wrong (unknown key, bad type)."""


class DataError(PrmkdError):
    """An input file is malformed. The message names the file, the line and what was expected."""

    def __init__(self, path, message: str, line: int | None = None):
        where = f"{path}" if line is None else f"{path}, line {line}"
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


class CacheMismatchError(PrmkdError):
    """A teacher cache (or checkpoint) was made for another dataset, split or configuration."""
