#!/usr/bin/env python3
"""The OCPP 1.6J central system (the code lives in evsim.csms.main)."""
from evsim.csms.main import main

if __name__ == "__main__":
    raise SystemExit(main())
