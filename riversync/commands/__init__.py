"""Subcommands of the riversync CLI, one module each."""
