"""The SQL store: models, sessions and migrations."""

from corral.store.db import Store
from corral.store.models import Base

__all__ = ["Base", "Store"]
