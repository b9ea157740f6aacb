"""The one error type users see: a title and a message that says what to do."""

from __future__ import annotations


class PvtuiError(Exception):
    """An error with a short title and a message telling the user what to do next."""

    def __init__(self, title: str, message: str) -> None:
        super().__init__(f"{title}: {message}")
        self.title = title
        self.message = message
