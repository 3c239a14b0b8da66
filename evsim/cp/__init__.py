"""The charge point: an OCPP 1.6J client bridged to the charger over CAN, with the memory a real one keeps in flash."""
