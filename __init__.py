"""tidings: durable customer journeys and lifecycle messaging on Temporal."""

__version__ = "0.1.0"
