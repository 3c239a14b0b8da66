"""The live chart of the charger's current with its anomaly indicator, and charts of past sessions."""
