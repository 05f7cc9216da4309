"""A fan-out's expansion: the array a body carries, one transformed document per item.

Pure; the one expansion both the request path (`compat.feature`) and the history delivery
(`publishing.delivery`) use, so that a fan-out rule means the same to both.
"""

from __future__ import annotations

import copy
from typing import Any

from cutover.compat.jsonops import apply, get_path
from cutover.compat.rules import FanOut

__all__ = ["fan_out_items", "items_path"]


def items_path(fan_out: FanOut) -> str:
    """Where the array is, as messages name it (`.` for the document itself)."""
    return ".".join(fan_out.items) or "."


def fan_out_items(fan_out: FanOut, doc: Any) -> list[Any] | None:
    """Each item of the array at `fan_out.items`, transformed by `fan_out.item_ops` (the
    document itself is left untouched); None when there is no array there.

    Raises `compat.jsonops.TransformError` when an item's transform cannot apply.
    """
    found, items = get_path(doc, fan_out.items)
    if not found or not isinstance(items, list):
        return None
    return [apply(fan_out.item_ops, copy.deepcopy(item)) for item in items]
