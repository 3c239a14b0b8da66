"""Detectors of charging anomalies (one module per kind of evidence), the SiteAnalyser that runs
them all for one charge point, the patterns they learn, the score against ground truth, and a
simulated site to try them on."""
