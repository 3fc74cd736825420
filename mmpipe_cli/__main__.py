"""``python -m mmpipe_cli``: the same as the ``mmp`` console script."""

import sys

from .commands import main

sys.exit(main())
