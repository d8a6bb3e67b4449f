"""Data: dataset specs, readers/writers with checks, datalists, MONAI transforms, demo and synthetic data.

``DataError`` (bad input, message names the file and the problem) is importable from here cheaply;
the rest lives in the submodules (``spec``, ``io``, ``datalist``, ``check``, ``transforms``,
``demo``, ``synthetic``).
"""

from .errors import DataError

__all__ = ["DataError"]
