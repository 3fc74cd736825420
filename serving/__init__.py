"""Uses of the pipeline's results: prediction on new items, similarity search, the HTTP service.

The core (``pipeline/``) never imports this package; it imports ``stages`` (for the stage objects
and the fused feature layout) and ``pipeline``.
"""
