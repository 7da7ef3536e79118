"""``python -m camserve``: the same as the ``camserve`` command."""

from camserve.cli import main

main()
