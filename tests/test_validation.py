"""Unit tests of fix validation: every rule of the contract, one bad fix never spoiling a batch."""

from __future__ import annotations

from typing import Any

import pytest

from tracker.errors import InvalidFix, InvalidInput
from tracker.parse import check_id, time_ms
from tracker.validation import parse_batch, parse_fix

NOW = 1_795_000_000_000


def fix(**kw: Any) -> dict[str, Any]:
    return {"lat": 52.5, "lon": 13.4, "ts": NOW - 1000, **kw}


def test_a_minimal_fix_is_accepted_with_device_and_fleet_from_the_caller() -> None:
    f = parse_fix(fix(device="someone-else", fleet="other"), "van-1", "couriers", NOW)
    assert (f.device, f.fleet, f.ts, f.lat, f.lon) == ("van-1", "couriers", NOW - 1000, 52.5, 13.4)
    assert f.speed is None and f.attrs is None


def test_optional_fields_are_kept() -> None:
    f = parse_fix(
        fix(speed=3.5, heading=360, accuracy=0, altitude=-20.5, battery=100, attrs={"a": [1, 2]}),
        "d",
        "f",
        NOW,
    )
    assert (f.speed, f.heading, f.accuracy, f.altitude, f.battery) == (3.5, 360, 0, -20.5, 100)
    assert f.attrs == {"a": [1, 2]}


def test_null_optional_fields_count_as_absent_and_unknown_fields_are_ignored() -> None:
    f = parse_fix(fix(speed=None, attrs=None, colour="red"), "d", "f", NOW)
    assert f.speed is None and f.attrs is None


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"lat": None}, "lat is required"),
        ({"lon": None}, "lon is required"),
        ({"ts": None}, "ts is required"),
        ({"lat": 90.0001}, "lat must be between -90 and 90"),
        ({"lat": -91}, "lat must be between -90 and 90"),
        ({"lon": 180.5}, "lon must be between -180 and 180"),
        ({"lat": "52.5"}, "lat must be a number"),
        ({"lat": True}, "lat must be a number"),
        ({"lat": float("nan")}, "lat must be a finite number"),
        ({"lon": float("inf")}, "lon must be a finite number"),
        ({"ts": 946_684_800_000}, "ts must be later than 2000-01-01"),
        ({"ts": 1_795_000_000}, "was it sent in seconds?"),
        ({"ts": NOW + 301_000}, "ahead of the server clock"),
        ({"ts": "yesterday"}, "ts must be milliseconds since the epoch or an ISO 8601"),
        ({"ts": "2026-11-26T10:00:00"}, "ts needs a UTC offset"),
        ({"speed": -0.1}, "speed must be >= 0"),
        ({"heading": 360.5}, "heading must be between 0 and 360"),
        ({"heading": -1}, "heading must be between 0 and 360"),
        ({"accuracy": -1}, "accuracy must be >= 0"),
        ({"battery": 101}, "battery must be between 0 and 100"),
        ({"altitude": float("nan")}, "altitude must be a finite number"),
        ({"attrs": [1, 2]}, "attrs must be a JSON object"),
        ({"attrs": {"x": "y" * 2100}}, "attrs must be at most 2048 bytes"),
    ],
)
def test_each_bad_field_is_named(change: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidFix, match=words.replace("?", r"\?")):
        parse_fix(fix(**change), "d", "f", NOW)


def test_a_fix_must_be_an_object() -> None:
    with pytest.raises(InvalidFix, match="a fix must be a JSON object"):
        parse_fix([52.5, 13.4], "d", "f", NOW)


def test_iso_times_with_an_offset_are_milliseconds() -> None:
    assert time_ms("2026-11-26T10:00:00Z", "ts") == 1_795_687_200_000
    assert time_ms("2026-11-26T11:00:00.250+01:00", "ts") == 1_795_687_200_250
    assert time_ms("1795687200000", "from") == 1_795_687_200_000
    f = parse_fix(fix(ts="2026-11-26T10:00:00Z"), "d", "f", 1_795_687_200_000)
    assert f.ts == 1_795_687_200_000


def test_a_batch_keeps_good_fixes_and_names_the_index_of_bad_ones() -> None:
    fixes, rejected = parse_batch([fix(ts=NOW - 3), fix(lat=99), "junk", fix(ts=NOW - 1)], "d", "f", NOW)
    assert [f.ts for f in fixes] == [NOW - 3, NOW - 1]
    assert [r["index"] for r in rejected] == [1, 2]
    assert "lat" in rejected[0]["error"]


def test_a_single_object_is_a_batch_of_one() -> None:
    fixes, rejected = parse_batch(fix(), "d", "f", NOW)
    assert len(fixes) == 1 and rejected == []


def test_a_batch_of_more_than_1000_or_of_the_wrong_type_is_refused_whole() -> None:
    with pytest.raises(InvalidInput, match="at most 1000 fixes; got 1001"):
        parse_batch([fix()] * 1001, "d", "f", NOW)
    with pytest.raises(InvalidInput, match="got str"):
        parse_batch("52.5,13.4", "d", "f", NOW)
    assert parse_batch([fix()] * 1000, "d", "f", NOW)[0][999].ts == NOW - 1000


@pytest.mark.parametrize("good", ["a", "van-7", "Fleet_1.north:x", "0" * 64])
def test_ids_that_match_the_contract_pattern(good: str) -> None:
    assert check_id(good, "id") == good


@pytest.mark.parametrize("bad", ["", "-van", "van 7", "x" * 65, "ü", 7, None, "van\n"])
def test_ids_that_do_not(bad: Any) -> None:
    with pytest.raises(InvalidInput, match="id must be 1-64 characters"):
        check_id(bad, "id")


def test_attrs_with_integers_beyond_64_bits_are_rejected() -> None:
    with pytest.raises(InvalidFix, match="attrs is not storable JSON"):
        parse_fix(fix(attrs={"big": 10**30}), "d", "f", NOW)


@pytest.mark.parametrize(
    "value",
    ["²", "99999999999999999999999", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", -5, 1e300],
)
def test_times_out_of_range_or_oddly_written_are_invalid_input(value: Any) -> None:
    with pytest.raises(InvalidInput, match="from"):
        time_ms(value, "from")


def test_integers_beyond_any_float_are_not_finite() -> None:
    with pytest.raises(InvalidFix, match="lat must be a finite number"):
        parse_fix(fix(lat=10**400), "d", "f", NOW)
