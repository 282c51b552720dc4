"""`make bench`: gssproxy-py measured next to the C gssproxy (see docs/PERFORMANCE.md)."""
