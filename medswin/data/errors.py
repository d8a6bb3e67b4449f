"""The data layer's error type (its own module so the CLI can catch it without importing readers)."""

from __future__ import annotations

import os


class DataError(Exception):
    """Bad input data.  ``str(err)`` is ``"<file>: <problem>"``; ``err.path`` and ``err.problem`` hold both.

    Args:
        path: the file (or folder, or config) at fault.
        problem: what is wrong with it, one line.  ``DataError(message)`` alone (``problem`` omitted) is the
            form torch's DataLoader uses to re-raise a worker's error; ``path`` is then empty.

    Picklable, so errors raised in worker processes come back as themselves.
    """

    def __init__(self, path: str | os.PathLike, problem: str | None = None) -> None:
        if problem is None:
            self.path, self.problem = "", str(path)
            super().__init__(self.problem)
        else:
            self.path, self.problem = str(path), problem
            super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple:
        return (type(self), (self.path, self.problem) if self.path else (self.problem,))


def root_data_error(exc: BaseException) -> DataError | None:
    """The :class:`DataError` behind ``exc`` when there is one (MONAI wraps transform errors in
    ``RuntimeError`` chains, torch its workers' errors), else ``None``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, DataError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
