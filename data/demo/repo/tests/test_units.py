import pytest

from fibrekit.units import metres_to_km


def test_metres_to_km() -> None:
    assert metres_to_km(2500) == pytest.approx(2.5)
    assert metres_to_km(0) == 0


def test_negative_lengths_are_rejected() -> None:
    with pytest.raises(ValueError):
        metres_to_km(-1)
