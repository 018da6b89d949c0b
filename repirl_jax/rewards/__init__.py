"""Rule-based rewards (verifiers) for rePIRL.

Submodules are imported explicitly (e.g. ``from repirl_jax.rewards import math as math_reward``) so that
importing this package stays cheap and pulls in no heavy verifier dependencies.
"""
