"""``python -m pyita.cli``: the ``pyita`` command."""

from pyita.cli.entry import main

main()
