"""Does a link fit its optical power budget?"""


def link_loss_db(length_m: float, splices: int, *, fibre_db_per_km: float = 0.35) -> float:
    """Fibre attenuation over the route plus the splices' loss, in dB."""
    raise NotImplementedError


def link_budget_ok(length_m: float, splices: int, budget_db: float) -> bool:
    """True when the link's loss stays within ``budget_db``."""
    raise NotImplementedError
