"""The lab's shareable links: parsing never raises, bad values are ignored with a notice, format/parse round-trip."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from noiselab.widgets.urlstate import PANELS, LabState, format_query, parse_query

MODELS = ["vanilla", "noise σ=0.5", "pgd_at ε=0.3"]


def test_empty_query_gives_empty_state():
    for query in ("", None, "?", "  "):
        assert parse_query(query, MODELS) == (LabState(), [])


def test_full_query_is_read():
    state, notices = parse_query("?panel=attack&sigma=0.75&eps=0.2&model=vanilla", MODELS)
    assert state == LabState(panel="attack", sigma=0.75, eps=0.2, model="vanilla")
    assert notices == []


def test_model_name_with_spaces_and_symbols_round_trips():
    state = LabState(panel="propagation", sigma=1.5, eps=0.05, model="noise σ=0.5")
    query = format_query(state)
    assert " " not in query and "σ" not in query
    assert parse_query(query, MODELS) == (state, [])


@pytest.mark.parametrize(
    "query, field, fragment",
    [
        ("sigma=-1", "sigma", "within [0, 3]"),
        ("sigma=3.5", "sigma", "within [0, 3]"),
        ("sigma=nan", "sigma", "within [0, 3]"),
        ("sigma=inf", "sigma", "within [0, 3]"),
        ("sigma=abc", "sigma", "must be a number"),
        ("sigma=", "sigma", "must be a number"),
        ("eps=1.01", "eps", "within [0, 1]"),
        ("eps=-0.1", "eps", "within [0, 1]"),
        ("panel=nope", "panel", "the panels are censoring"),
        ("model=resnet", "model", "the lab's models are 'vanilla'"),
    ],
)
def test_invalid_values_are_ignored_with_a_notice(query, field, fragment):
    state, notices = parse_query(query, MODELS)
    assert getattr(state, field) is None
    assert len(notices) == 1 and fragment in notices[0], notices


def test_bounds_are_inclusive():
    state, notices = parse_query("sigma=0&eps=1", MODELS)
    assert (state.sigma, state.eps, notices) == (0.0, 1.0, [])
    assert parse_query("sigma=3", MODELS)[0].sigma == 3.0


def test_valid_values_survive_beside_invalid_ones():
    state, notices = parse_query("panel=attack&eps=2&sigma=0.4&colour=red", MODELS)
    assert state == LabState(panel="attack", sigma=0.4)
    assert len(notices) == 2
    assert any("unknown setting 'colour'" in notice for notice in notices)


def test_model_must_be_known_and_no_models_is_said():
    state, notices = parse_query("model=vanilla", [])
    assert state.model is None and "none yet" in notices[0]


def test_last_repeated_key_wins():
    assert parse_query("eps=0.1&eps=0.3", MODELS)[0].eps == 0.3


def test_long_values_are_cut_in_notices_and_long_queries_ignored():
    _, notices = parse_query("panel=" + "x" * 500, MODELS)
    assert len(notices[0]) < 200
    state, notices = parse_query("sigma=1&pad=" + "x" * 3000, MODELS)
    assert state == LabState() and "too long" in notices[0]


def test_too_many_fields_is_a_notice_not_an_exception():
    state, notices = parse_query("&".join(f"k{i}=1" for i in range(50)), MODELS)
    assert state == LabState() and notices


def test_format_omits_unset_fields_and_rounds_slider_noise():
    assert format_query(LabState()) == ""
    assert format_query(LabState(panel="attack", eps=0.30000000000000004)) == "panel=attack&eps=0.3"
    assert format_query(LabState(sigma=1.0)) == "sigma=1"


@given(
    panel=st.sampled_from((None, *PANELS)),
    sigma=st.one_of(st.none(), st.floats(0, 3).map(lambda v: round(v, 4))),
    eps=st.one_of(st.none(), st.floats(0, 1).map(lambda v: round(v, 4))),
    model=st.sampled_from((None, *MODELS)),
)
def test_round_trip(panel, sigma, eps, model):
    state = LabState(panel, sigma, eps, model)
    assert parse_query("?" + format_query(state), MODELS) == (state, [])


@given(st.text(max_size=300))
def test_any_text_parses_without_raising(text):
    state, notices = parse_query(text, MODELS)
    assert state.panel in (None, *PANELS)
    assert state.sigma is None or 0 <= state.sigma <= 3
    assert state.eps is None or 0 <= state.eps <= 1
    assert state.model in (None, *MODELS)
    assert all(isinstance(notice, str) for notice in notices)
