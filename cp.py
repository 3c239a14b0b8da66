#!/usr/bin/env python3
"""The OCPP 1.6J charge point (the code lives in evsim.cp.main)."""
from evsim.cp.main import main

if __name__ == "__main__":
    raise SystemExit(main())
