"""Why a PKINIT in the child got no TGT, from what the responder saw
(`pkcs11.pkinit.why_no_tgt`): the one line the daemon passes on to the
client, never holding the PIN."""

from __future__ import annotations

from gssproxy_py.pkcs11.pkinit import why_no_tgt

P = "svc@EXAMPLE.TEST"
ID = "PKCS11:module_name=/m.so:token=t"


def test_a_refusal_of_the_responder_is_the_whole_reason() -> None:
    why, krb5_text = why_no_tgt(
        P, refused=f"{ID}: the token's user PIN is locked", asked=["pkinit"], answered=[]
    )
    assert why == f"PKINIT for {P}: {ID}: the token's user PIN is locked"
    assert not krb5_text


def test_no_pkinit_question_says_preauthentication_was_not_offered() -> None:
    why, krb5_text = why_no_tgt(P, refused=None, asked=["password"], answered=[])
    assert why.startswith(f"PKINIT for {P} was not attempted")
    assert "preauthentication" in why and krb5_text


def test_no_identity_in_the_module() -> None:
    why, krb5_text = why_no_tgt(P, refused=None, asked=["pkinit"], answered=[])
    assert why == f"PKINIT for {P}: no identity in the module" and krb5_text


def test_answered_names_the_identities_and_says_a_pin_was_supplied() -> None:
    why, krb5_text = why_no_tgt(P, refused=None, asked=["pkinit"], answered=[ID, ID + "2"])
    assert why.startswith(f"PKINIT for {P} with {ID}, {ID}2 (PIN supplied;")
    assert krb5_text
