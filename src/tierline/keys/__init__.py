"""Virtual API keys: the store, budgets, RPM/TPM limits, the gateway hooks, the admin API."""

from tierline.keys.auth import KeyAuth, merge_constraints, open_mode_problem
from tierline.keys.budget import Budgets, Reservation
from tierline.keys.limits import Limits
from tierline.keys.store import KeyRecord, KeyStore

__all__ = ["Budgets", "KeyAuth", "KeyRecord", "KeyStore", "Limits", "Reservation",
           "merge_constraints", "open_mode_problem"]
