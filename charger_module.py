#!/usr/bin/env python3
"""The charger's power electronics as a CAN node (the code lives in evsim.charger.main)."""
from evsim.charger.main import main

if __name__ == "__main__":
    raise SystemExit(main())
