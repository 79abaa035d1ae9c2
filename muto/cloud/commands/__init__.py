"""Write side: each function returns a command for the Writer (see writer.py).

Commands check everything before they trigger the first event, so a refused command
leaves its aggregates untouched. One module per aggregate: vehicles, releases, desired
(state assignments); rollouts are muto.cloud.rollouts, tokens muto.cloud.tokens.
"""

from muto.cloud.commands.cause import Cause
from muto.cloud.commands.desired import (
    Assignment,
    Reissued,
    SignDocument,
    assign_desired_state,
    assign_run_nothing,
    incompatibilities,
    new_revision,
    payload_digest,
    reissue_desired_state,
    renew_desired_state,
)
from muto.cloud.commands.releases import load_release, register_release
from muto.cloud.commands.vehicles import (
    record_health,
    record_presence,
    record_reconcile,
    register_vehicle,
    register_vehicles,
    registered_vehicle,
    update_vehicle,
)

__all__ = [
    "Assignment",
    "Cause",
    "Reissued",
    "SignDocument",
    "assign_desired_state",
    "assign_run_nothing",
    "incompatibilities",
    "load_release",
    "new_revision",
    "payload_digest",
    "record_health",
    "record_presence",
    "record_reconcile",
    "register_release",
    "register_vehicle",
    "register_vehicles",
    "registered_vehicle",
    "reissue_desired_state",
    "renew_desired_state",
    "update_vehicle",
]
