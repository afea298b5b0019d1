"""The one exception type a user sees: its message is a sentence that says what to do instead."""


class ZooError(Exception):
    """A user-facing error. The CLI prints its message on stderr and exits non-zero."""


class UnknownNameError(ZooError, KeyError):
    """A model or dataset name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ZooWarning(UserWarning):
    """Something a user should know that does not stop the work (the CLI prints it as one line)."""
