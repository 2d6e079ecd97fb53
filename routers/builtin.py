"""Imports every built-in router module so each registers itself in ``ROUTERS``."""

from routers import keyword  # noqa: F401
from routers import skill  # noqa: F401
from routers import category  # noqa: F401
from routers import embedding  # noqa: F401
