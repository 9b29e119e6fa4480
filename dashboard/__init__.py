"""The ops dashboard: a live map of the city and the platform's figures.

Run it with ``foodmesh serve dashboard`` (``foodmesh up`` starts it on :8090).
"""

from dashboard.app import Dashboard, DashboardConfig, main, serve

__all__ = ["Dashboard", "DashboardConfig", "main", "serve"]
