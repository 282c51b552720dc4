"""pkcs11 layer; see docs/ARCHITECTURE.md."""
