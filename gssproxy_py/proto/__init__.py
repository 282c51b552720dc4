"""proto layer; see docs/ARCHITECTURE.md."""
