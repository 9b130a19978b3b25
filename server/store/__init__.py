"""The operator's store: a record of every call, in SQLite (default) or PostgreSQL.

settings.py   StoreSettings (AIGC_DATA_DIR, AIGC_DATABASE_URL, AIGC_RECORD_*, retention)
schema.py     the tables (SQLAlchemy Core)
migrations/   Alembic migrations, run at start-up (database.py)
database.py   Store: open + migrate, insert and query
recorder.py   CallRecorder: batches finished calls off the hot path
"""

from server.store.database import Store
from server.store.settings import StoreSettings

__all__ = ["Store", "StoreSettings"]
