"""``python -m gmmlib``: see :mod:`gmmlib.cli`."""
import sys

from .cli import main

sys.exit(main())
