"""xdrgen layer; see docs/ARCHITECTURE.md."""
