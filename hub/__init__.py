"""riversync.hub."""
