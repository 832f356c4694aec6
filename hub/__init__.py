"""riversync.hub: the hub daemon.

The hub stores every node's signed batches exactly as received, hands them to the other
nodes, and records where each node stands.  It relays and cannot forge: nodes verify each
origin's signature themselves.  It acknowledges a batch only after a durable commit.

Modules, from the wire inwards:

- ``server``: run the daemon (open the store, serve, stop on SIGTERM).
- ``app``: the HTTP endpoints, one route table, limits, errors as protocol ErrorReplies.
- ``nonces``: replay protection for signed requests.
- ``epoch``: where a pull starts when the node's cursor is of another hub epoch.
- ``writer``: group commit; the one thread that writes to the store.
- ``store``: the storage interface; ``store_sqlite``: its embedded SQLite implementation,
  with backup and restore.
- ``metrics``: Prometheus metrics, one registry per hub.

The reference is docs/reference/hub.md.
"""
