"""An attribute whose assignment makes its owner judge a kept flag again.

A flag read on every request (is the mirror full? is the gateway shedding?) is cheapest as a
plain attribute, kept by its owner wherever what it depends on changes. What a reload or a
test may set from outside goes through this descriptor, so that no assignment can leave the
flag stale: each calls the owner's `_judge()`. Reads go through it too, which is fine for
values read now and then, not per request.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar, overload

__all__ = ["Judged"]

T = TypeVar("T")


class Judged(Generic[T]):
    """`name = Judged()` on a class stores the value in `_name` (declare it in `__slots__`)
    and calls `owner._judge()` after every assignment."""

    __slots__ = ("slot",)

    def __init__(self) -> None:
        self.slot = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = "_" + name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Judged[T]: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...

    def __get__(self, obj: object | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return getattr(obj, self.slot)

    def __set__(self, obj: Any, value: T) -> None:
        setattr(obj, self.slot, value)
        obj._judge()
