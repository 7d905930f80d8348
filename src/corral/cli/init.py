"""`corral init`: create the local store and a starter corral.yaml."""

from __future__ import annotations

from pathlib import Path

from corral.cli.common import console, settings
from corral.config import corral_home
from corral.store import Store

STARTER_CONFIG = """\
# corral settings; every key can also be set as CORRAL_SECTION__KEY (e.g. CORRAL_GATEWAY__PORT).
# `corral config show` prints the effective values.
store:
  database_url: ""          # empty: SQLite under .corral/; or postgresql+psycopg://user@host/db
artifacts:
  url: ""                   # empty: .corral/artifacts; or s3://bucket/prefix
gateway:
  host: 127.0.0.1
  port: 8000
deployments: {}
"""


def init() -> None:
    """Create .corral/ (SQLite store, artifacts) and a corral.yaml if there is none."""
    home = corral_home()
    home.mkdir(parents=True, exist_ok=True)
    config = Path("corral.yaml")
    if not config.exists():
        config.write_text(STARTER_CONFIG)
        console.print(f"wrote {config}")
    store = Store.from_settings(settings())
    if store.create_if_empty():
        console.print(f"created the schema in the empty database at {store.safe_url()}")
    store.ensure_ready()
    console.print(f"store ready at {store.safe_url()}; artifacts at {settings().artifacts.resolved_url()}")
