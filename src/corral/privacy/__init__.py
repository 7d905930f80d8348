"""Privacy: forget a user everywhere (store, datasets, spool), retention purges, audit export."""

from corral.privacy.audit_export import export_audit
from corral.privacy.erase import EXEMPT_TABLES, ErasureReport, erase_user, purge_rule
from corral.privacy.retention import purge_expired

__all__ = ["EXEMPT_TABLES", "ErasureReport", "erase_user", "export_audit", "purge_expired", "purge_rule"]
