"""riversync.node."""
