"""``python -m pyita``: the ``pyita`` command, for environments whose scripts folder is not on PATH."""

from pyita.cli.entry import main

main()
