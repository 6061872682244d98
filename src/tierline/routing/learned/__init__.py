"""Learned cost-quality router (see docs/router-eval.md).

Import the pieces from their modules (``tierline.routing.learned.model`` etc.): this package
``__init__`` stays import-cheap and does not import numpy.
"""

__all__: list[str] = []
