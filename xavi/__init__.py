"""Xavi: an edge agent that runs a host's Docker services and meshes hosts over gossip."""

__version__ = "0.1.0"
