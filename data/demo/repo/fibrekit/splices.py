"""Optical loss of fusion splices."""


def splice_loss_db(count: int, per_splice_db: float = 0.1) -> float:
    """Total loss of ``count`` splices in dB."""
    raise NotImplementedError
