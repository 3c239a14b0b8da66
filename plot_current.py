#!/usr/bin/env python3
"""Live chart of the charger's current (the code lives in evsim.plot.main)."""
from evsim.plot.main import main

if __name__ == "__main__":
    raise SystemExit(main())
