"""medcloud: de-identify at the source, collect into a hub, curate, serve models, learn federated."""

__version__ = "0.1.0"
