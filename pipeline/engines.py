"""The executors' names, and the module that defines each one's ``Executor``.

A leaf of the core: ``pipeline.config`` reads the names to validate ``run.engine`` and
``pipeline.executors`` imports the module chosen, so both point here and neither at the other.
"""

ENGINES: dict[str, str] = {"local": "pipeline.executors.local", "ray": "pipeline.executors.ray"}
