"""Where a study's results live: an SQLite database, artifact files, content keys, the lock."""

from traitlens.store.db import JobRecord, Store
from traitlens.store.keys import content_key

__all__ = ["JobRecord", "Store", "content_key"]
