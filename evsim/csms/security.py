"""Who may connect to the central system, and how they prove it (OCPP 1.6 Security Whitepaper):
the registry of known charge points, their security profiles and authorization keys."""
from __future__ import annotations


class ChargePointRegistry:
    """Known charge points (``--charge-points FILE``); see :meth:`set_key`."""

    def set_key(self, charge_point_id: str, key: str) -> None:
        """The key the registry expects from now on (kept across restarts). KeyError for an
        unknown charge point, ValueError for a key of the wrong length."""
        raise NotImplementedError
