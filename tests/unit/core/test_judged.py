"""`Judged`: every assignment has the owner judge its kept flag again."""

from __future__ import annotations

from cutover.core.judged import Judged


class Gate:
    __slots__ = ("_limit", "_used", "open")

    limit: Judged[int] = Judged()
    used: Judged[int] = Judged()

    def __init__(self) -> None:
        self._limit, self._used = 2, 0
        self.open = True

    def _judge(self) -> None:
        self.open = self._used < self._limit


def test_each_assignment_judges_again_and_reads_give_the_value() -> None:
    gate = Gate()
    gate.used = 2
    assert not gate.open and gate.used == 2 and gate._used == 2
    gate.limit = 3  # a reload raising the bound opens it at once
    assert gate.open and gate.limit == 3
    gate.limit = 1
    assert not gate.open
    assert isinstance(Gate.limit, Judged) and Gate.limit.slot == "_limit"
