"""The data layer's error type (its own module so the CLI can catch it without importing readers)."""

from __future__ import annotations

import os


class DataError(Exception):
    """Bad input data.  ``str(err)`` is ``"<file>: <problem>"``; ``err.path`` and ``err.problem`` hold both."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
