"""direct2event: transfer direct-coded spiking networks to event-driven ones."""

__version__ = "0.1.0"
