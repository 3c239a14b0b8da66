#!/usr/bin/env python3
"""Read the MemoryBank from a terminal (the code lives in evsim.viewer.main)."""
from evsim.viewer.main import main

if __name__ == "__main__":
    raise SystemExit(main())
