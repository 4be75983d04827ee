"""RouteLead: real-time lead distribution by ping-post auctions."""

__version__ = "0.1.0"
