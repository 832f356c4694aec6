"""riversync.engine."""
