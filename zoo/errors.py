"""The one exception type a user sees: its message is a sentence that says what to do instead."""


class ZooError(Exception):
    """A user-facing error. The CLI prints its message on stderr and exits non-zero."""


class UnknownNameError(ZooError, KeyError):
    """A model or dataset name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ZooWarning(UserWarning):
    """Something a user should know that does not stop the work (the CLI prints it as one line)."""


def first_line(error: BaseException) -> str:
    """A library's error in a few words, to put inside zoo's sentence: its message's first line,
    or its type's name when it has no message."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
