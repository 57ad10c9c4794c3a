"""Partage: an IHE XDS.b registry and repository with an MHD facade and CI-SIS CDA validation."""

__version__ = "0.1.0"
