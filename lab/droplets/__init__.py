"""Droplets as Docker containers: sshd + an inner Docker engine on a private lab network."""
from lab.droplets.backend import ContainerBackend

__all__ = ["ContainerBackend"]
