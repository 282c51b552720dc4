"""Keys on PKCS#11 tokens, served as the TOKEN_SIGN RPC program (0x2F5E5001).

Modules:

* `program`: the program's handlers, per-service key access, and
  `token_sign_service(config)`, the `ProgramService` the server registers;
* `token`: one worker thread per module (sessions, the single login per
  token, recovery from lost sessions and removed tokens, key lookup, signing);
* `adapter`: the typed layer over python-pkcs11 (the only module importing
  it) and the protocols the rest is written against;
* `mechanisms`: signature mechanisms, combined on the token or hashed here;
* `keys`: key kinds, curves, SubjectPublicKeyInfo, key URIs;
* `uri`: the RFC 7512 parser;
* `pin`, `keyring`: PIN sources (`keyring:` user keys, `file:`);
* `pkinit`: a TGT by PKINIT with a token key, the PIN given through libkrb5's
  responder;
* `errors`: failures and their wire statuses.

One `TokenSignBackend` per process: python-pkcs11 keeps one handle per
module path, so two backends would share (and finalise) each other's module.
"""
