"""Hard limits that every decoder enforces before and while decoding.

They bound memory and CPU per request so that no input can make a daemon hang or swell.
"""

MAX_BLOB_BYTES = 16 * 1024 * 1024  # one signed blob; a 10,000-event batch fits well inside
MAX_EVENT_BYTES = 15 * 1024 * 1024  # one encoded event: it always fits a one-event batch
MAX_EVENTS_PER_BATCH = 10_000  # keeps one apply transaction short
MAX_NAME_CHARS = 64  # node ids, table and column names, users, roles
MAX_PK_CHARS = 256  # primary key text
MAX_TEXT_CHARS = 1_000_000  # one text value
MAX_BYTES_VALUE = 8 * 1024 * 1024  # one blob value
MAX_COLUMNS = 256  # columns set by one event
MAX_BATCHES_PER_PULL = 1_000  # batches returned by one pull
MAX_WAIT_MS = 60_000  # longest long-poll a hub will hold
NONCE_BYTES = 16  # random bytes per request; collisions are out of reach
HASH_BYTES = 32  # SHA-256 of a batch's body bytes
