"""The MemoryBank, importable as before: ``from memory_bank import MemoryBank``.

The code lives in :mod:`evsim.bank`; ``from evsim import MemoryBank`` is the same class.
"""
from evsim.bank import *  # noqa: F403
from evsim.bank import __all__  # noqa: F401
