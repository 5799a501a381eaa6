"""``python -m t2a_lib.run``: the runner (``runner.main``) over the ordered notebooks."""

import sys

from .runner import main

sys.exit(main())
