"""Plumbing shared by every Grassroots service: bus, database, auth, validation, metrics."""

import warnings

# nameko 2.x depends on eventlet, which announces its deprecation on import, and its CLI module
# imports pkg_resources, which does the same. Neither is something a caller of the suite can act
# on: importing any part of `shared` before nameko keeps them out of callers' output and our logs.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
warnings.filterwarnings("ignore", message=r"pkg_resources is deprecated", category=UserWarning)
