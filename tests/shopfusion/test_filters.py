"""Filters as values: normalisation, validation that says how to fix things, the `--filter` syntax."""

from __future__ import annotations

import pytest

from shopfusion.errors import QueryError
from shopfusion.filter_syntax import parse_filters
from shopfusion.types import (
    AttributeFilter,
    Filters,
    Product,
    attribute_values,
    normalize_text,
    normalize_value,
    value_number,
)


@pytest.mark.parametrize(("raw", "normalized"), [
    ("  Dark\u00a0GREY ", "dark grey"),
    ("Ｒｅｄ", "red"),
    ("Straße", "strasse"),
    ("e\u0301", "\u00e9"),  # combining accent -> one code point
    ("6.50", "6.5"),
    ("6.0", "6"),
    ("007", "7"),
    ("1E3", "1000"),
    ("-0.0", "0"),
    ("0095205603217", "95205603217"),
    ("18V", "18v"),
    ("1e999", "1e999"),  # not turned into a thousand digits
])
def test_one_normalisation_for_index_and_query(raw: str, normalized: str) -> None:
    assert normalize_value(raw) == normalized


def test_numbers_of_values() -> None:
    assert value_number("6.5") == 6.5 and value_number("-40.5") == -40.5
    assert value_number("18v") is None and value_number("1e999") is None


def test_attribute_values_normalise_names_and_values_and_skip_huge_ones() -> None:
    product = Product("1", "x", attributes={"Colour": "BLACK ", "colour": "white", "notes": "y" * 5000, "e": " "})
    assert attribute_values(product) == {"colour": "black"}  # "Colour" sorts first; empty and huge left out


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"brands": "HP"}, r"got the bare string 'HP'.*write \('HP',\)"),
    ({"category": "Tools > Drills"}, "bare string"),
    ({"brands": ("HP", "")}, "empty value matches nothing"),
    ({"brands": ("  ",)}, "empty value"),
    ({"price_min": float("nan")}, "finite number"),
    ({"price_max": float("inf")}, "finite number"),
    ({"price_min": "10"}, "must be a number"),
    ({"price_min": True}, "must be a number"),
    ({"price_min": 50, "price_max": 10}, "swap the bounds"),
    ({"price_min": 10, "price_below": 10}, "range .* is empty"),
    ({"attributes": {"colour": "black"}}, "bare string 'black'"),
    ({"attributes": ["colour=black"]}, "not an AttributeFilter"),
    ({"attributes": "colour"}, "must be a sequence of AttributeFilter"),
])
def test_invalid_filters_say_how_to_fix_them(kwargs: dict, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        Filters(**kwargs)


def test_invalid_attribute_filters() -> None:
    with pytest.raises(QueryError, match="neither values nor bounds"):
        AttributeFilter("colour")
    with pytest.raises(QueryError, match="needs an attribute name"):
        AttributeFilter(" ", ("x",))
    with pytest.raises(QueryError, match="finite"):
        AttributeFilter("weight", min=float("nan"))
    with pytest.raises(QueryError, match="not a value to filter on"):
        AttributeFilter("weight", (float("nan"),))


def test_filters_are_hashable_values_and_round_trip_through_dicts() -> None:
    filters = Filters(category=("Tools",), brands=["HP"], price_below=20,
                      attributes={"colour": ["black", "grey"], "Voltage": ("18V",)})
    assert filters.brands == ("HP",) and filters.attributes[0].values == ("black", "grey")
    assert hash(filters) == hash(Filters.from_dict(filters.to_dict()))
    assert Filters.from_dict(filters.to_dict()) == filters
    with pytest.raises(QueryError, match="unknown filter key"):
        Filters.from_dict({"colour": "black"})


def test_reference_semantics_of_attribute_filters() -> None:
    product = Product("1", "Mouse", brand="hp", price=25.0, attributes={"Colour": "BLACK", "weight": "93.0"})
    assert Filters(brands=("HP",), attributes={"colour": ("Black", "white")}).matches(product)
    assert Filters(attributes=[AttributeFilter("weight", ("93",))]).matches(product)
    assert Filters(attributes=[AttributeFilter("weight", min=93, max=93)]).matches(product)
    assert not Filters(attributes=[AttributeFilter("weight", below=93)]).matches(product)
    assert not Filters(price_below=25).matches(product) and Filters(price_max=25).matches(product)
    assert not Filters(attributes={"size": ("xl",)}).matches(product)  # lacking the attribute never matches
    assert not Filters(attributes={"colour": ("black",), "weight": ("90",)}).matches(product)  # AND


def test_filter_syntax() -> None:
    parsed = parse_filters(["category=Tools > Drills", "brand=HP", "brand=Dell", "price=10..<50", "price>=20",
                            "Colour=black", "colour=grey", "weight=1..5", "weight<4", "attributes.price=4995"])
    assert parsed.category == ("Tools", "Drills") and parsed.brands == ("HP", "Dell")
    assert (parsed.price_min, parsed.price_max, parsed.price_below) == (20.0, None, 50.0)
    colour, weight, price = parsed.attributes
    assert colour == AttributeFilter("Colour", ("black", "grey"))
    assert (weight.min, weight.max, weight.below) == (1.0, 5.0, 4.0)
    assert price.name == "price" and price.values == ("4995",)
    assert parse_filters(["price=25"]) == Filters(price_min=25.0, price_max=25.0)
    assert parse_filters(["price=..20"]) == Filters(price_max=20.0)
    assert parse_filters(["compatibility=a=b"]).attributes[0].values == ("a=b",)


@pytest.mark.parametrize(("argument", "message"), [
    ("price=nan", "not a bound to filter on"),
    ("price=10..inf", "not a bound"),
    ("brand=", "has no value.*brand=Makita"),
    ("colour=", "has no value.*colour=VALUE"),
    ("price=cheap", "'cheap' is not a number"),
    ("price>10", r"write price>=10"),
    ("price=..", "at least one bound"),
    ("brand>=3", "a brand takes '='"),
    ("nothing", "write KEY=VALUE"),
    ("=x", "names no field"),
])
def test_filter_syntax_errors(argument: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        parse_filters([argument])


def test_only_one_category_prefix() -> None:
    with pytest.raises(QueryError, match="one category prefix"):
        parse_filters(["category=Tools", "category=Garden"])


def test_normalize_text_is_idempotent() -> None:
    for text in ["ǅ", "ﬁ", "Σίσυφος", "İstanbul", "x\u2003y"]:
        once = normalize_text(text)
        assert normalize_text(once) == once
