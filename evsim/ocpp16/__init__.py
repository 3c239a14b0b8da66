"""OCPP 1.6J at the site's boundary, for both sides: framing, 1.6's error codes, charging profiles."""
