"""promptship: from a development request to a verified deployment with AI agents."""

__version__ = "0.1.0"
