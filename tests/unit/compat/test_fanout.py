"""compat.fanout: the one fan-out expansion the request path and history deliveries share."""

from __future__ import annotations

import pytest

from cutover.compat.fanout import fan_out_items, items_path
from cutover.compat.jsonops import Rename, Set, TransformError
from cutover.compat.rules import FanOut


def test_each_item_is_transformed_and_the_document_left_alone() -> None:
    fo = FanOut(items=("alerts",), item_ops=(Set(("source",), "am"), Rename(("id",), "key")))
    doc = {"alerts": [{"id": 1}, {"id": 2}], "version": "4"}
    assert fan_out_items(fo, doc) == [{"key": 1, "source": "am"}, {"key": 2, "source": "am"}]
    assert doc == {"alerts": [{"id": 1}, {"id": 2}], "version": "4"}


@pytest.mark.parametrize(
    "doc", [{}, {"alerts": {"id": 1}}, {"alerts": "x"}, [], None, {"data": {"alerts": []}}]
)
def test_no_array_at_the_path_is_none(doc: object) -> None:
    assert fan_out_items(FanOut(items=("alerts",)), doc) is None


def test_a_nested_path_and_the_document_itself() -> None:
    assert fan_out_items(FanOut(items=("data", "alerts")), {"data": {"alerts": [1]}}) == [1]
    assert fan_out_items(FanOut(items=()), [{"a": 1}]) == [{"a": 1}]
    assert items_path(FanOut(items=())) == "."
    assert items_path(FanOut(items=("data", "alerts"))) == "data.alerts"


def test_an_item_the_transform_cannot_apply_to_raises() -> None:
    fo = FanOut(items=("alerts",), item_ops=(Set(("labels", "x"), 1),))
    with pytest.raises(TransformError):
        fan_out_items(fo, {"alerts": [{"labels": "not an object"}]})
