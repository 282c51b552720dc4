"""RFC 7512 URI parser: a table of accepted and refused URIs, round trips,
and properties over generated URIs."""

from __future__ import annotations

import contextlib
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gssproxy_py.errors import PeerError
from gssproxy_py.pkcs11.uri import ObjectType, Pkcs11Uri, UriError, format_value, parse_uri

GOOD = [
    ("pkcs11:", Pkcs11Uri()),
    ("PKCS11:token=a", Pkcs11Uri(token="a")),
    ("pkcs11:token=My%20token", Pkcs11Uri(token="My token")),
    # percent-decoding happens after splitting: escaped delimiters survive
    ("pkcs11:token=a%3Bb;object=c%3Dd", Pkcs11Uri(token="a;b", object="c=d")),
    ("pkcs11:object=a%3Fb", Pkcs11Uri(object="a?b")),
    ("pkcs11:object=%25", Pkcs11Uri(object="%")),
    # "=" inside a value: the attribute splits at the first one only
    ("pkcs11:object=a=b", Pkcs11Uri(object="a=b")),
    # "&" is a plain character in the path, a separator in the query
    ("pkcs11:object=a&b", Pkcs11Uri(object="a&b")),
    ("pkcs11:id=%01%02%ff", Pkcs11Uri(id=b"\x01\x02\xff")),
    ("pkcs11:id=AB", Pkcs11Uri(id=b"AB")),
    ("pkcs11:id=", Pkcs11Uri(id=b"")),
    ("pkcs11:type=private", Pkcs11Uri(type=ObjectType.PRIVATE)),
    ("pkcs11:type=secret-key", Pkcs11Uri(type=ObjectType.SECRET_KEY)),
    ("pkcs11:slot-id=42", Pkcs11Uri(slot_id=42)),
    ("pkcs11:library-version=2", Pkcs11Uri(library_version="2")),
    ("pkcs11:library-version=2.40", Pkcs11Uri(library_version="2.40")),
    ("pkcs11:Token=a", Pkcs11Uri(token="a")),  # ABNF literals are case-insensitive
    (
        "pkcs11:token=t?module-path=/usr/lib/p11/x.so&pin-source=file:/etc/pin",
        Pkcs11Uri(token="t", module_path="/usr/lib/p11/x.so", pin_source="file:/etc/pin"),
    ),
    ("pkcs11:?module-name=softhsm2", Pkcs11Uri(module_name="softhsm2")),
    ("pkcs11:object=a?pin-value=x%26y", Pkcs11Uri(object="a", pin_value="x&y")),
    # a "?" after the first one is part of the query
    ("pkcs11:?module-path=/a?b", Pkcs11Uri(module_path="/a?b")),
    ("pkcs11:token=%C3%A9t%C3%A9", Pkcs11Uri(token="été")),
    ("pkcs11:x-vendor=1;token=a", Pkcs11Uri(token="a", vendor=(("x-vendor", "1", False),))),
    ("pkcs11:?x-q=1", Pkcs11Uri(vendor=(("x-q", "1", True),))),
    (
        "pkcs11:model=SoftHSM%20v2;manufacturer=SoftHSM%20project;serial=1a2b;token=t;"
        "id=%01;object=rsa;type=private",
        Pkcs11Uri(
            model="SoftHSM v2",
            manufacturer="SoftHSM project",
            serial="1a2b",
            token="t",
            id=b"\x01",
            object="rsa",
            type=ObjectType.PRIVATE,
        ),
    ),
]


@pytest.mark.parametrize(("text", "want"), GOOD, ids=[g[0][:60] for g in GOOD])
def test_accepted(text: str, want: Pkcs11Uri) -> None:
    got = parse_uri(text)
    assert got == want
    assert got.pin_value == want.pin_value  # excluded from ==, compared here
    assert parse_uri(got.to_string()) == got


BAD = [
    ("", "must start with 'pkcs11:'"),
    ("pkcs11", "must start with 'pkcs11:'"),
    ("pkcs12:token=a", "must start with 'pkcs11:'"),
    ("pkcs11:token=a;token=b", "more than once"),
    ("pkcs11:token=a;Token=b", "more than once"),
    ("pkcs11:?pin-value=1&pin-value=2", "more than once"),
    ("pkcs11:token", "has no '='"),
    ("pkcs11:=a", "empty name"),
    ("pkcs11:token=a;", "empty path attribute"),
    ("pkcs11:;token=a", "empty path attribute"),
    ("pkcs11:token=a?", None),  # empty query is fine: checked below
    ("pkcs11:?&module-name=a", "empty query attribute"),
    ("pkcs11:tokne=a", "unknown attribute 'tokne'"),
    ("pkcs11:module-path=/x", "belongs in the query"),
    ("pkcs11:?token=a", "belongs in the path"),
    ("pkcs11:token=a b", "must be percent-encoded"),
    ("pkcs11:token=a/b", "must be percent-encoded"),
    ("pkcs11:?module-name=a;b", "must be percent-encoded"),
    ("pkcs11:token=%zz", "bad percent-escape"),
    ("pkcs11:token=%4", "bad percent-escape"),
    ("pkcs11:token=%", "bad percent-escape"),
    ("pkcs11:token=%ff", "not UTF-8"),
    ("pkcs11:type=key", "is not one of"),
    ("pkcs11:slot-id=x1", "decimal"),
    ("pkcs11:slot-id=-1", "decimal"),
    ("pkcs11:library-version=2.x", "MAJOR"),
]


@pytest.mark.parametrize(("text", "why"), BAD, ids=[b[0] or "<empty>" for b in BAD])
def test_refused(text: str, why: str | None) -> None:
    if why is None:
        assert parse_uri(text) == Pkcs11Uri(token="a")
        return
    with pytest.raises(UriError, match=why):
        parse_uri(text)


def test_uri_error_is_the_peers_fault() -> None:
    assert issubclass(UriError, PeerError)


def test_pin_value_never_shown() -> None:
    uri = parse_uri("pkcs11:token=t?pin-value=s3cr3t-PIN")
    assert uri.pin_value == "s3cr3t-PIN"
    for shown in (repr(uri), str(uri), uri.to_string(), f"{uri}", f"{uri!r}"):
        assert "s3cr3t" not in shown
    assert "redacted" in repr(uri).lower()


def test_pin_value_not_in_errors() -> None:
    # A malformed pin-value must not be echoed in the error either.
    with pytest.raises(UriError) as e:
        parse_uri("pkcs11:token=t?pin-value=s3cr3t PIN")
    assert "s3cr3t" not in str(e.value)
    assert "a character must be percent-encoded" in str(e.value)


def test_canonical_form_encodes_id_fully() -> None:
    assert parse_uri("pkcs11:id=AB").to_string() == "pkcs11:id=%41%42"
    assert format_value("a b/c") == "a%20b%2Fc"
    assert format_value("/usr/lib/x.so", query=True) == "/usr/lib/x.so"


def test_matching() -> None:
    uri = parse_uri("pkcs11:token=t;serial=S;id=%01;type=private")
    token = {
        "label": "t",
        "manufacturer": "m",
        "serial": "S",
        "model": "x",
        "slot_id": 3,
        "slot_description": "d",
        "slot_manufacturer": "sm",
    }
    assert uri.matches_token(**token)
    assert not uri.matches_token(**{**token, "serial": "T"})
    assert uri.matches_object(label="any", key_id=b"\x01", object_type=ObjectType.PRIVATE)
    assert not uri.matches_object(label="any", key_id=b"\x02", object_type=ObjectType.PRIVATE)
    assert not uri.matches_object(label="any", key_id=b"\x01", object_type=ObjectType.PUBLIC)
    assert parse_uri("pkcs11:").matches_token(**token)
    assert not parse_uri("pkcs11:").selects_token
    assert uri.selects_token
    assert parse_uri("pkcs11:library-version=2").matches_library("m", "d", "2.0")
    assert not parse_uri("pkcs11:library-version=2.1").matches_library("m", "d", "2.0")


# -- properties ----------------------------------------------------------------

_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=12,
)
_uris = st.builds(
    Pkcs11Uri,
    token=st.none() | _text,
    manufacturer=st.none() | _text,
    serial=st.none() | st.text(string.hexdigits, max_size=16),
    model=st.none() | _text,
    object=st.none() | _text,
    type=st.none() | st.sampled_from(ObjectType),
    id=st.none() | st.binary(max_size=8),
    slot_id=st.none() | st.integers(min_value=0, max_value=2**32),
    slot_description=st.none() | _text,
    module_path=st.none() | _text,
    module_name=st.none() | _text,
)


@given(_uris)
def test_format_then_parse_round_trips(uri: Pkcs11Uri) -> None:
    assert parse_uri(uri.to_string()) == uri


@given(st.text(max_size=80))
@settings(max_examples=300)
def test_arbitrary_text_parses_or_raises_uri_error(text: str) -> None:
    with contextlib.suppress(UriError):
        parse_uri("pkcs11:" + text)


@given(st.lists(st.sampled_from(";&?=%:/ a1"), max_size=30).map("".join))
@settings(max_examples=300)
def test_delimiter_soup_parses_or_raises_uri_error(text: str) -> None:
    with contextlib.suppress(UriError):
        parse_uri("pkcs11:" + text)


@given(_text, _text)
def test_escaped_delimiters_survive(a: str, b: str) -> None:
    value = f"{a};{b}?&="
    uri = parse_uri(f"pkcs11:object={format_value(value)};token={format_value(b)}")
    assert uri.object == value
    assert uri.token == b
