"""Plumbing shared by every Grassroots service: bus, database, auth, validation, metrics."""

import warnings

# eventlet announces its deprecation on import; nameko 2.x depends on it regardless.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
