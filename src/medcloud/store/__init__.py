"""Storage: the content-addressed blob store (a local folder, small blobs in packs) and the metadata
catalog (SQLAlchemy Core tables, Alembic migrations; SQLite embedded, PostgreSQL at scale).

Nothing outside this package touches SQL. The catalog is split by job, reached through `Catalog`:
`db` (engines, transactions), `index`, `query`, `sites`, `tokens`, `audit`. An S3-compatible blob
store is planned, not built: today there is only `LocalBlobStore`.
"""

from medcloud.store.blobs import LocalBlobStore, MemoryBudget, SpooledUpload
from medcloud.store.catalog import Catalog, secrets_dir
from medcloud.store.db import Database, utcnow
from medcloud.store.index import IndexEntry
from medcloud.store.queries import MAX_PAGE, Filters

__all__ = [
    "MAX_PAGE",
    "Catalog",
    "Database",
    "Filters",
    "IndexEntry",
    "LocalBlobStore",
    "MemoryBudget",
    "SpooledUpload",
    "secrets_dir",
    "utcnow",
]
