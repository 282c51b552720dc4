"""gss layer; see docs/ARCHITECTURE.md."""
