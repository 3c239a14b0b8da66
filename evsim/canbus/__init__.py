"""The CAN side of the site: the frame table (from the DBC), opening the shared bus, and a node's asyncio link to it."""
