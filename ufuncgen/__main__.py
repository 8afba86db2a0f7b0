"""``python -m ufuncgen``: the same command line as the ``ufuncgen`` script."""
from .cli import main

raise SystemExit(main())
