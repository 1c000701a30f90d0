"""mailvet.testing."""
