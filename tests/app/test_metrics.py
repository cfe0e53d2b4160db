"""app/metrics.py: the operation label takes values from a bounded set, whatever names callers send."""

from __future__ import annotations

from app.metrics import MAX_OPERATION_LENGTH, OTHER_OPERATION, OperationLabels


def test_known_names_keep_their_label_and_others_fill_a_bounded_set() -> None:
    labels = OperationLabels(limit=2)
    labels.allow(["BatchDetail"])
    assert [labels(n) for n in ("First", "Second", "Third", "First")] == ["First", "Second", OTHER_OPERATION, "First"]
    assert labels("BatchDetail") == "BatchDetail", "a known name does not count against the limit"


def test_long_names_are_cut_and_non_names_are_other() -> None:
    labels = OperationLabels(limit=10)
    assert labels("A" * 300) == "A" * MAX_OPERATION_LENGTH
    assert labels("A" * 299 + "B") == "A" * MAX_OPERATION_LENGTH, "cut names share a value instead of adding one"
    for probe in ("", "1abc", "drop table;", "名前", "a\nb", 'x"} 1\nfake_metric{a="'):
        assert labels(probe) == OTHER_OPERATION
