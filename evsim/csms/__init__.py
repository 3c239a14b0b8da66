"""The central system: an OCPP 1.6J server that lets charge points in, drives scenarios on them and records what crosses OCPP."""
