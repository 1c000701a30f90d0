"""mailvet.api."""
