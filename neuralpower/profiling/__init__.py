"""Measuring a device: synthetic networks, in-network layer timing, power meters, campaigns.

    from neuralpower.profiling import Campaign
    Campaign("cpu.csv", device="cpu").run(budget_s=600)
"""
from .campaign import CSV_COLUMNS, Campaign, sidecar_path  # noqa: F401
from .synthetic import PROFILED_KINDS  # noqa: F401
