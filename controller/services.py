"""The controller's parts, handed to commands and the API as one object."""

from __future__ import annotations

from dataclasses import dataclass

from controller.accounts import Accounts
from controller.permissions import Permissions
from controller.releases import Releases
from controller.store import Store


@dataclass
class Services:
    store: Store
    accounts: Accounts
    permissions: Permissions
    releases: Releases
    auth_required: bool
    # --insecure-single-user: jobs are not isolated, so no second user may exist
    single_user: bool = False
    # how long a new job name stays with the user whose first deploy of it failed (a retry)
    claim_grace: float = 600.0
    ssh_url: str = ""  # ssh://git@HOST:PORT, known once the SSH server has bound its port
