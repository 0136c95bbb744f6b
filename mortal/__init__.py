"""mortal: Forward-Forward learning in situ on emulated analog chips.

The learning modules see hardware only through :mod:`mortal.chip`.
"""

__version__ = "0.1.0"
