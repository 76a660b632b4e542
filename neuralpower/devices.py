"""What a device is called: the ``device`` column of every row, a predictor's card, ``measure``.

A CPU's name is its brand string with the processor's family and model numbers. Under a
hypervisor the brand string is often generic: this project's development VMs read "Intel(R)
Xeon(R) Processor" on two different Xeons (one ran the speed probe at about half the other's
pace) and "AMD EPYC"; the numbers from ``cpuid`` tell such CPUs apart, so ``fit`` refuses to mix
their campaigns and ``validate`` says when a predictor is used on another CPU. Names recorded
before the numbers were added (the campaigns of 2026-11 and early 2026-12) are taken as the same
device as any name that adds numbers to the same brand string: they cannot say which CPU it was.
"""
from __future__ import annotations

import platform
import re

import torch

CPUINFO = "/proc/cpuinfo"
_IDS = re.compile(r" \(family \d+ model \d+\)")


def device_name(device: torch.device, threads: int, cpuinfo: str = CPUINFO) -> str:
    """A stable name for the ``device`` column (fit refuses to mix devices)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    fields = _cpu_fields(cpuinfo)
    model = fields.get("model name") or platform.processor() or platform.machine()
    if fields.get("cpu family", "").isdigit() and fields.get("model", "").isdigit():
        model += f" (family {fields['cpu family']} model {fields['model']})"
    return f"{model}, {threads} thread{'s' if threads > 1 else ''}"


def same_device(a: str, b: str) -> bool:
    """Whether two device names are one device: equal, or equal but for the family and model
    numbers that one of them, recorded before they were, lacks."""
    if a == b:
        return True
    bare_a, bare_b = _IDS.sub("", a), _IDS.sub("", b)
    return bare_a == bare_b and (bare_a == a or bare_b == b)


def one_device(names) -> str | None:
    """The name of the one device ``names`` are (the most specific of them), or None when they
    are several devices."""
    names = sorted(set(names), key=lambda n: (-len(n), n))
    if names and all(same_device(names[0], n) for n in names):
        return names[0]
    return None if names else "unknown device"


def _cpu_fields(cpuinfo: str) -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where it is not readable)."""
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo) as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block ends
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields
