import pytest

from shopfusion.errors import TrainingError
from shopfusion.types import Product
from trainer.domains import (
    LabeledText,
    domain_of,
    drop_rare_labels,
    group_by_domain,
    kshot_split,
    leave_one_out,
    validate_examples,
)


def _data(per_label: int = 12) -> list[LabeledText]:
    return [LabeledText(f"{label} item {i}", label, "d") for label in ("a", "b", "c") for i in range(per_label)]


def test_kshot_split_sizes_and_disjointness() -> None:
    split = kshot_split(_data(), k=2, test_per_label=3, seed=1)
    assert len(split.train) == 6 and len(split.test) == 9 and len(split.unlabeled) == 21
    assert not {e.text for e in split.train} & {e.text for e in split.test}


def test_kshot_split_is_seeded_and_test_set_does_not_depend_on_k() -> None:
    one = kshot_split(_data(), k=1, test_per_label=3, seed=7)
    five = kshot_split(_data(), k=5, test_per_label=3, seed=7)
    assert one.test == five.test
    assert kshot_split(_data(), k=1, test_per_label=3, seed=7) == one
    assert kshot_split(_data(), k=None, test_per_label=3, seed=7).k is None
    assert len(kshot_split(_data(), k=None, test_per_label=3, seed=7).train) == 27


def test_too_few_examples_names_the_label_and_the_fix() -> None:
    data = _data(3) + [LabeledText("lonely", "rare", "d")]
    with pytest.raises(TrainingError, match="label 'rare' has 1 example.*drop_rare_labels"):
        kshot_split(data, k=2, test_per_label=1)
    assert "rare" not in {e.label for e in drop_rare_labels(data, 2)}


def test_unknown_label_and_empty_data_are_errors() -> None:
    with pytest.raises(TrainingError, match="unknown label 'z'"):
        validate_examples(_data(2) + [LabeledText("x", "z", "d")], labels=["a", "b", "c"])
    with pytest.raises(TrainingError, match="empty"):
        validate_examples([])
    with pytest.raises(TrainingError, match="at least 2"):
        validate_examples([LabeledText("x", "a", "d")])
    with pytest.raises(TrainingError, match="k must be"):
        kshot_split(_data(), k=0)


def test_grouping_and_leave_one_out() -> None:
    data = _data(2) + [LabeledText("t", "x", "e"), LabeledText("u", "y", "e")]
    assert list(group_by_domain(data)) == ["d", "e"]
    source, target = leave_one_out(data, "e")
    assert len(source) == 6 and len(target) == 2
    with pytest.raises(TrainingError, match="known domains: d, e"):
        leave_one_out(data, "nope")


def test_domain_of_product() -> None:
    p = Product(id="1", title="t", category_path=("Beverages", "Tea"), attributes={"source": "bb"})
    assert domain_of(p) == "Beverages"
    assert domain_of(p, "source") == "bb"
    assert domain_of(p, lambda q: q.title) == "t"
    with pytest.raises(TrainingError, match="group by `source`"):
        domain_of(Product(id="2", title="t"))
