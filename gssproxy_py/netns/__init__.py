"""netns layer; see docs/ARCHITECTURE.md."""
