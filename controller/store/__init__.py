"""The platform's records, in SQL. Everything else reaches the database through this package.

SQLite in the data dir is the embedded default. The SQL is kept to what PostgreSQL also speaks
(placeholders aside), so a PostgreSQL store is these classes on another connection. Calls are
synchronous and short; they run on the event loop thread, which serialises them.
"""

from controller.store.access import AccessStore
from controller.store.endpoints import EndpointStore
from controller.store.people import PeopleStore
from controller.store.records import (
    AuditEvent,
    Cause,
    EndpointApproval,
    Esc,
    Family,
    Grant,
    Release,
    ReleaseStatus,
    SshKey,
    Token,
    User,
)
from controller.store.releases import ReleaseStore


class Store(PeopleStore, ReleaseStore, AccessStore, EndpointStore):
    """Every record of the platform, on one connection."""


__all__ = [
    "AuditEvent",
    "Cause",
    "EndpointApproval",
    "Esc",
    "Family",
    "Grant",
    "Release",
    "ReleaseStatus",
    "SshKey",
    "Store",
    "Token",
    "User",
]
