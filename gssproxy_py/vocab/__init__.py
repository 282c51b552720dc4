"""The protocol vocabulary the daemon and the clients share, one module each.

* `oids`: the `gssx_OID` codec (DER contents <-> dotted text) and the OIDs of
  mechanisms and name types;
* `gssx_options`: the `gssx_option` names and values (NUL-terminated, as the
  kernel and the interposer send them) and the C-string helpers;
* `gss_status`: the GSS major status codes (RFC 2744) and their names;
* `token_sign`: the names of the TOKEN_SIGN signature mechanisms.

Pure: these import only `proto` and `errors`, so a client never pulls in the
daemon's layers (or python-gssapi, python-pkcs11, cryptography) through them.
"""
