"""The charger module: the power electronics as a CAN node that obeys start/stop/limit frames and publishes the measured current."""
