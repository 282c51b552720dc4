"""rpc layer; see docs/ARCHITECTURE.md."""
