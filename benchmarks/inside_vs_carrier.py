"""Which kind of block does its carrier misprice? A block's kernels inside its whole models against
the same block timed in its carrier (search/blocks.block_model), per kind of block.

Used by benchmarks/latency_model.py `report`, on what its `time` phase kept: every block's carrier
time and every whole model's kernel profile. The carrier must price each kind of block as the model
runs it: a kind it under-prices (a depthwise conv that fuses inside the model but not in its carrier,
say) makes the search favour students of that kind.
"""

from __future__ import annotations

from typing import Any


def block_kind(desc: str) -> str:
    """A block's kind from its table description ("Conv 3x3 64->64 s1 dw @64x64+Relu")."""
    from edgedistill.search.latency import is_upsampling

    head = desc.split("+")[0]
    if is_upsampling(desc):
        return "upsampling"
    if " dw " in head:
        return "depthwise"
    op, k, chans, *_ = head.split(" ")
    if "3" in chans.split("->"):
        return f"stem/head {k}"
    return f"{op} {k}" if k != "1x1" else "pointwise 1x1"


def inside_vs_carrier(plan: dict[str, Any], tim: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per block kind, the candidates' blocks timed inside their whole model (its kernel profile)
    against the same blocks in their carriers: which kind the carrier under- or over-prices. A
    kernel inside the model is the block's whose node or tensor it names (or, fused, one of its
    layers names), the earliest such block; a nameless one (a reorder) goes with the kernel after it."""
    from edgedistill.search.block_timing import NOT_KERNELS, Kernel, owner

    out: dict[str, dict[str, float]] = {}
    for name, m in plan["models"].items():
        if m["role"] != "cand" or name not in tim.get("whole_kernels", {}):
            continue
        kernels = [Kernel(*k) for k in tim["whole_kernels"][name] if k[1] not in NOT_KERNELS]
        owns = [set(occ["own"]) for occ in m["occurrences"]]
        owner_of: list[int | None] = []
        for k in kernels:
            owner_of.append(next((i for i, own in enumerate(owns) if owner(k, own, set())), None))
        follow = owner_of[-1] if owner_of else None
        for i in reversed(range(len(owner_of))):
            owner_of[i] = follow = owner_of[i] if owner_of[i] is not None else follow
        inside = [0.0] * len(owns)
        for k, i in zip(kernels, owner_of, strict=True):
            if i is not None:
                inside[i] += k.ms
        for i, key in enumerate(m["blocks"]):
            kind = block_kind(plan["blocks"][key]["desc"])
            row = out.setdefault(kind, {"n": 0, "carrier_ms": 0.0, "inside_ms": 0.0})
            row["n"] += 1
            row["carrier_ms"] += tim["blocks"][key]["ms"]
            row["inside_ms"] += inside[i]
    for row in out.values():
        row["ratio"] = round(row["inside_ms"] / row["carrier_ms"], 3) if row["carrier_ms"] else float("nan")
        row["carrier_ms"], row["inside_ms"] = round(row["carrier_ms"], 3), round(row["inside_ms"], 3)
    return dict(sorted(out.items()))
