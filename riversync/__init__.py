"""riversync: keeps the SQLite databases of several offices in sync through one hub."""

__version__ = "0.1.0"
