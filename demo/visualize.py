"""The drawing of the demos lives in :mod:`sine.utils.visualize` (``python -m sine.label``
draws with it too); this module keeps the demos' import path."""
from sine.utils.visualize import *  # noqa: F401,F403
from sine.utils.visualize import _PALETTE  # noqa: F401  (colours of the reference ids)
