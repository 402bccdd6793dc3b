"""A DigitalOcean-compatible fake API for tests and the local lab."""
from .backend import DropletBackend, NullBackend
from .server import FakeDigitalOcean

__all__ = ["DropletBackend", "FakeDigitalOcean", "NullBackend"]
