"""``python -m mailvet`` is the ``mailvet`` command."""

from mailvet.cli import main

main()
