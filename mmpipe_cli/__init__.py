"""The wiring layer: the ``mmp`` command line, where the core (``pipeline``), the stages (``stages``) and
serving (``serving``) are put together. The arrows point one way: mmpipe_cli -> serving -> stages ->
pipeline; no package below imports this one (tests/test_layers.py checks it).

``mmp`` (the console script) and ``python -m mmpipe_cli`` run ``mmpipe_cli.commands.main``.
"""
