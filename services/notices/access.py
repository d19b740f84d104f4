"""Who may act for a resident in the notices service (acknowledge, set preferences), whatever mix
of roles the token holds.

The rule: a token may do to an object what one of its roles, on its own, may do to that object.
Each role's rule is checked whole and on its own, never pieced together with another's:

- ``resident``: their own records only (``sub`` is the resident id), wherever they live;
- staff and services (``admin``, ``officer``, ``grid_worker``, ``service``): residents whose unit
  path lies in the token's ``unit`` subtree; ``admin`` and ``service`` without a ``unit`` reach
  the whole district.

So a token with roles ``resident`` and ``officer`` acts for its own resident (as the resident) and
for the residents under its unit (as the officer), never for anyone else: holding the resident
role does not waive the officer's unit scope, and a unit-less token gains no staff scope from
being a resident's.
"""

from shared.auth import UNIT_ROLES as STAFF_ROLES  # roles that act within a unit scope
from shared.errors import Forbidden
from shared.paths import path_ids


def acts_as_self(caller, resident_id):
    return caller.has_role("resident") and caller.sub == str(resident_id)


def may_act_for(caller, resident_id, path_of):
    """True if ``caller`` may act for the resident. ``path_of()`` gives the resident's unit path
    (a path string or a list of ids), or None if unknown; it is called only when the staff rule
    needs it."""
    if acts_as_self(caller, resident_id):
        return True
    if not caller.has_role(*STAFF_ROLES):
        return False
    if caller.unrestricted:
        return True
    path = path_of()
    if path is None:
        return False
    return caller.reaches(path_ids(path) if isinstance(path, str) else path)


def require_act_for(caller, resident_id, path_of, action):
    if not may_act_for(caller, resident_id, path_of):
        raise Forbidden(f"{action}: a resident only for themselves, staff only for residents in their unit scope")


def require_some_rule(caller, resident_id, action):
    """Refuse at once a caller none of whose roles could act for the resident (a resident for
    someone else), before anything about the resident or the object is looked up."""
    if not acts_as_self(caller, resident_id) and not caller.has_role(*STAFF_ROLES):
        raise Forbidden(f"{action}: a resident only for themselves, staff only for residents in their unit scope")
