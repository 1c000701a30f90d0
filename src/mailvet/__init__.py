"""mailvet: self-hosted email verification, a drop-in for the Mails.so API."""

__all__ = ["__version__"]

__version__ = "0.1.0"
