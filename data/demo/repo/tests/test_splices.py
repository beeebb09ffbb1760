import pytest

from fibrekit.splices import splice_loss_db


def test_splice_loss() -> None:
    assert splice_loss_db(10) == pytest.approx(1.0)
    assert splice_loss_db(4, per_splice_db=0.05) == pytest.approx(0.2)
