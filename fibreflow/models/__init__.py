"""The model layer: every LLM call goes through ``client``, which routes, retries, prices and
records it. Sits above the store (calls are recorded) and below the agents that use it.

Modules:

- ``client``: ``LLMClient``, the one wrapper around the ``anthropic`` SDK (``--offline`` points it
  at the scripted server).
- ``routing``: ``ModelRouter``, the cheapest tier that can do a request, and why.
- ``pricing``: ``Pricing`` and ``price_usage``, token usage to dollars from ``data/pricing.yaml``.
- ``scripted``: the scripted model, a local Messages-API server (the offline mode and the tests).
- ``scripted_replies``: the replies and error bodies the scripted server builds from a turn.
- ``scripts``: the shipped conversations of the scripted model (``demo_feature``).
"""
