"""mailvet.jobs: batch runners (in-process for the embedded server)."""
