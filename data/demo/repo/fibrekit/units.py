"""Unit conversions for route lengths."""


def metres_to_km(metres: float) -> float:
    """Route length in kilometres."""
    raise NotImplementedError
