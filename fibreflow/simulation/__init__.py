"""The what-if simulator: projections calibrated on the store's recorded history.

Modules:

- ``calibration``: ``Calibration.from_store``, the workload the history shows (rates, peaks, tiers, SLAs).
- ``engine``: the scenarios (``simulate_add_agents``, ``plan_capacity``, ``optimize_model_routing``)
  and ``ScenarioResult``.
"""
