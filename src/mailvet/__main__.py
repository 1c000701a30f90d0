"""``python -m mailvet`` is the ``mailvet`` command."""

from mailvet.entry import main

main()
