"""Measuring a trained PRM and policy: PRM quality, reports, the oracle PRM, early signal, paired statistics."""
