"""Fixtures of the dashboard's browser kit (tests/e2e/dashboard_kit.py), for every
tests/e2e/test_dashboard_*.py."""

from .dashboard_kit import browser, dashboard, page  # noqa: F401 - pytest finds them by name
