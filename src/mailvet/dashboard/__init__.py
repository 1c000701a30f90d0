"""The web dashboard: pages served by ``mailvet serve`` at ``/``."""
