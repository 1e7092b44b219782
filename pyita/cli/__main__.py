"""``python -m pyita.cli``: the ``pyita`` command."""

from pyita.cli.main import main

main()
