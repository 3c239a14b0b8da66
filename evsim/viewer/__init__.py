"""The terminal viewer of the MemoryBank: tables, JSON, exports and an interactive menu."""
