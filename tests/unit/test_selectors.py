from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muto.domain.selectors import Selector, SelectorError, parse_selector

TOKEN_CHARS = "abcXYZ019._/-"
tokens = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=8)
label_maps = st.dictionaries(tokens, tokens, max_size=5)
selectors = st.dictionaries(tokens, tokens, min_size=1, max_size=5).map(
    lambda terms: Selector(tuple(terms.items()))
)


def test_parses_the_seed_example() -> None:
    selector = parse_selector("model=vehicle-v3 AND ring=1")
    assert selector.terms == (("model", "vehicle-v3"), ("ring", "1"))
    assert str(selector) == "model=vehicle-v3 AND ring=1"


def test_whitespace_and_case_of_and_are_tolerated() -> None:
    assert parse_selector("  ring = 1   and\tmodel=vehicle-v3 ") == parse_selector(
        "model=vehicle-v3 AND ring=1"
    )


def test_term_order_does_not_matter_and_exact_repeats_collapse() -> None:
    assert parse_selector("b=2 AND a=1 AND b=2") == parse_selector("a=1 AND b=2")
    assert hash(parse_selector("b=2 AND a=1")) == hash(parse_selector("a=1 AND b=2"))


def test_keys_and_values_may_hold_dots_slashes_and_dashes() -> None:
    selector = parse_selector("fleet.io/region=eu-west_1 AND v=1.2.3")
    assert selector.matches({"fleet.io/region": "eu-west_1", "v": "1.2.3", "x": "y"})


def test_matches_needs_every_term() -> None:
    selector = parse_selector("model=v3 AND ring=1")
    assert selector.matches({"model": "v3", "ring": "1", "region": "eu"})
    assert not selector.matches({"model": "v3", "ring": "2"})
    assert not selector.matches({"model": "v3"})
    assert not selector.matches({})


@pytest.mark.parametrize(
    ("text", "position", "expected"),
    [
        ("model", 5, "expected '=' after key 'model' at position 5"),
        ("model ring=1", 6, "expected '=' after key 'model' at position 6"),
        ("model=", 6, "expected a value after 'model=' at position 6"),
        ("=v3", 0, "expected a key at position 0"),
        ("a=1 AND", 7, "expected a key=value term after 'AND' at position 7"),
        ("a=1 AND ", 8, "expected a key=value term after 'AND' at position 8"),
        ("a=1 OR b=2", 4, "expected 'AND' or end of selector after 'a=1' at position 4"),
        ("a=1=2", 3, "expected 'AND' or end of selector after 'a=1' at position 3"),
        ("a=1 ANDb=2", 4, "expected 'AND' or end of selector after 'a=1' at position 4"),
        ("model=v 3", 8, "expected 'AND' or end of selector after 'model=v' at position 8"),
        ("ring=1 AND ring=2", 11, "key 'ring' at position 11 repeats with a different value"),
        ("", 0, "empty selector"),
        ("   ", 0, "empty selector"),
    ],
)
def test_errors_name_what_was_expected_and_where(text: str, position: int, expected: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse_selector(text)
    assert caught.value.position == position
    assert str(caught.value).startswith(expected)


def test_a_key_with_two_values_says_it_can_never_match() -> None:
    with pytest.raises(SelectorError, match="can never match"):
        parse_selector("ring=1 AND ring=2")


def test_selector_error_is_a_value_error() -> None:
    assert issubclass(SelectorError, ValueError)


def test_a_selector_cannot_be_built_empty_or_with_bad_terms() -> None:
    with pytest.raises(ValueError):
        Selector(())
    with pytest.raises(ValueError):
        Selector((("a b", "1"),))
    with pytest.raises(ValueError):
        Selector((("a", "1"), ("a", "2")))


@settings(deadline=None)
@given(selectors)
def test_canonical_form_parses_back_to_the_same_selector(selector: Selector) -> None:
    assert parse_selector(str(selector)) == selector


@settings(deadline=None)
@given(selectors, label_maps)
def test_matches_agrees_with_a_direct_dict_check(
    selector: Selector, labels: dict[str, str]
) -> None:
    expected = all(k in labels and labels[k] == v for k, v in selector.terms)
    assert selector.matches(labels) is expected


@settings(deadline=None)
@given(st.dictionaries(tokens, tokens, min_size=1, max_size=5))
def test_a_vehicle_carrying_the_terms_always_matches(terms: dict[str, str]) -> None:
    text = " AND ".join(f"{k}={v}" for k, v in terms.items())
    assert parse_selector(text).matches(terms)


garbage = st.text(alphabet=st.sampled_from([*TOKEN_CHARS, "=", " ", "\t", "A", "N", "D", "#"]))


@settings(deadline=None)
@given(st.one_of(garbage, st.text()))
def test_garbage_raises_only_selector_error(text: str) -> None:
    try:
        selector = parse_selector(text)
    except SelectorError as exc:
        assert 0 <= exc.position <= len(text)
    else:
        assert parse_selector(str(selector)) == selector


def test_a_selector_is_bounded_in_terms_and_characters() -> None:
    from muto.domain.selectors import MAX_CHARS, MAX_TERMS

    at_bound = " AND ".join(f"k{i}=v" for i in range(MAX_TERMS))
    assert len(parse_selector(at_bound).terms) == MAX_TERMS
    with pytest.raises(SelectorError) as over:
        parse_selector(at_bound + " AND extra=v")
    assert over.value.limit == MAX_TERMS and f"at most {MAX_TERMS} terms" in over.value.message
    with pytest.raises(SelectorError) as long:
        parse_selector("k=" + "v" * MAX_CHARS)
    assert long.value.limit == MAX_CHARS and "characters" in long.value.message
