"""mailvet.engine."""
