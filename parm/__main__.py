"""``python -m parm``: the same as the ``parm`` command (parm.multiproc starts its serving processes so)."""
import sys

from parm.cli import main

sys.exit(main())
