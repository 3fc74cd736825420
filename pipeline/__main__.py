"""``python -m pipeline``: kept so the old spelling still works; it only hands over to the wiring layer.

A script, never imported by any module, so the core's rule (it imports no stage, serving or CLI code)
holds for every module of the package; tests/test_layers.py checks both.
"""

import sys

from mmpipe_cli.commands import main

sys.exit(main())
