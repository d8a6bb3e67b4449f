"""Small helpers shared by layers and models (timm's ``to_3tuple``, MONAI's ``ensure_tuple_rep``)."""

from __future__ import annotations

from collections.abc import Sequence


def to_3tuple(value: int | Sequence[int], name: str = "value", minimum: int | None = None) -> tuple[int, int, int]:
    """An int or three per-axis ints -> ``(d, h, w)`` ints.

    Args:
        value: ``7`` -> ``(7, 7, 7)``; ``(2, 2, 1)`` stays.
        name: what the value is, for the error message.
        minimum: smallest allowed entry (``None``: no bound).

    Raises ``ValueError`` naming ``name`` for anything but one int or three ints (or an entry below ``minimum``).
    """
    t = (int(value),) * 3 if isinstance(value, int) else tuple(int(v) for v in value)
    if len(t) != 3 or (minimum is not None and any(v < minimum for v in t)):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"{name} must be an int{bound} or 3 ints{bound} (d, h, w), got {value!r}")
    return t  # type: ignore[return-value]
