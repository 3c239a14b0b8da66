"""evsim: a multi-process simulator of an OCPP 1.6J charging site and its anomalies.

One folder per part of the site: ``bank`` (the MemoryBank), ``canbus`` (frames and the shared
bus), ``charger`` (the power module), ``cp`` (the charge point), ``csms`` (the central system),
``detection`` (anomaly detectors), ``ocpp16`` (the protocol boundary), ``plot`` and ``viewer``.
"""
from evsim.bank import MemoryBank, MemoryBankError

__all__ = ["MemoryBank", "MemoryBankError"]
__version__ = "0.2.0"
