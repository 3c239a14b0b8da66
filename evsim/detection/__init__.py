"""Detectors of charging anomalies, the patterns they learn, and signals to try them on."""
