"""vocab/token_sign.py: one name per ts_mechanism, used by daemon and clients alike."""

from __future__ import annotations

import pytest

from gssproxy_py.pkcs11.mechanisms import MECHANISMS
from gssproxy_py.proto.token_sign import TsMechanism
from gssproxy_py.vocab.token_sign import MECHANISM_NAMES, mechanism_from_name, mechanism_name


def test_every_wire_mechanism_has_one_name() -> None:
    assert list(MECHANISM_NAMES) == list(TsMechanism)
    assert len(set(MECHANISM_NAMES.values())) == len(TsMechanism)


def test_the_daemon_table_takes_its_names_from_here() -> None:
    assert {w: m.name for w, m in MECHANISMS.items()} == dict(MECHANISM_NAMES)


def test_names_both_ways() -> None:
    assert mechanism_name(TsMechanism.TS_MECH_RSA_PSS_SHA256) == "rsa-pss-sha256"
    assert mechanism_from_name("RSA-PSS-SHA256") is TsMechanism.TS_MECH_RSA_PSS_SHA256
    with pytest.raises(ValueError, match="unknown mechanism 'ecdsa-sha512'; known: rsa-pkcs1"):
        mechanism_from_name("ecdsa-sha512")
