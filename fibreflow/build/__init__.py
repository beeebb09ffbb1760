"""Building features: N sandboxed agent attempts per feature, features in dependency order.

Sits above the agents (it runs them) and below learning and selection (which read what it
records), so the attempt record lives here.

Modules:

- ``features``: ``Feature`` and ``FeatureList``, the feature list a build works through (or one goal).
- ``attempt``: ``AgentAttempt``, the one record of an attempt, and ``run_attempt``, what a worker does.
- ``runner``: ``ParallelRunner``, the attempts of all features on one pool of workers.
- ``records``: the ``runs``, ``features`` and ``attempts`` rows (the three tables' only writer).
- ``escalation``: ``TierLadder``, one model tier up while no attempt of a feature passes.
- ``progress``: progress events, a terminal bar and a notebook widget.
- ``tiers``: which tier a feature's attempts run on and why (override, pinned, agent rule, routed).
- ``stacking``: a feature's attempts start from its dependencies' winning code (shared with the autopilot).
- ``guards``: the data gate and budget guard protocols the runner asks before attempts.
- ``budget``: ``Budget``, daily and monthly limits over model and sandbox spend, and their alerts.
- ``preflight``: the model key and model IDs, the E2B key and Slack checked before a run spends.
"""
