import pytest

from fibrekit.budget import link_budget_ok, link_loss_db


def test_link_loss_adds_fibre_and_splices() -> None:
    assert link_loss_db(10_000, 10) == pytest.approx(3.5 + 1.0)


def test_budget() -> None:
    assert link_budget_ok(10_000, 10, budget_db=5.0)
    assert not link_budget_ok(20_000, 30, budget_db=5.0)
