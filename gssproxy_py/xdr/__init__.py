"""xdr layer; see docs/ARCHITECTURE.md."""
