"""manifest.json of an artifact directory (contract 3): what was built, for what, and how good it is."""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedistill.core.artifact import MANIFEST
from edgedistill.core.atomic import write_text_atomic
from edgedistill.core.calibset import CalibrationSet
from edgedistill.core.targets import Target
from edgedistill.core.versions import installed_versions

if TYPE_CHECKING:
    from edgedistill.exporter.api import SourceModel
    from edgedistill.exporter.gate import GateOutcome

TOOLS = ("edgedistill", "torch", "onnx", "onnxruntime", "onnxslim", "openvino", "nncf", "tensorrt")


def tool_versions() -> dict[str, str]:
    return installed_versions(TOOLS)


def file_sizes(directory: Path) -> dict[str, int]:
    return {
        str(p.relative_to(directory)): p.stat().st_size for p in sorted(directory.rglob("*")) if p.is_file()
    }


def target_dict(target: Target) -> dict[str, Any]:
    d = asdict(target)
    d["path"] = None
    d["precisions"] = list(target.precisions)
    return d


def write_manifest(directory: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Add sizes, tool versions and a timestamp; write atomically; return what was written."""
    manifest = {
        **manifest,
        "sizes": file_sizes(directory),
        "versions": tool_versions(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    write_text_atomic(directory / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def export_manifest(
    src: SourceModel,
    tgt: Target,
    outcome: GateOutcome,
    calib: CalibrationSet | None,
    held: CalibrationSet,
    min_psnr: float | None,
) -> dict[str, Any]:
    """What export built, for which target, from what calibration, and what its quality gate found."""
    result = outcome.result
    return {
        "format": 1,
        "model": src.name,
        "target": {
            **target_dict(tgt),
            "input_size": src.spec.default_size if src.spec.kind == "image" else None,
        },
        "backend": tgt.backend,
        "precision": result.precision,
        "files": result.files,
        "spec": src.spec.to_dict(),
        "macs": src.macs,
        "params": src.params,
        "quality": {
            **outcome.quality.to_dict(),
            ("min_agreement" if src.spec.kind == "classifier" else "min_psnr"): min_psnr,
            "passed": outcome.passed,
            "before_fallback": outcome.attempts[0].quality.to_dict(),
        },
        "kept_higher_precision": result.kept_higher_precision,
        "gate": {
            "attempts": [
                {"kept": len(a.kept), "psnr_vs_fp32": round(a.quality.psnr_vs_fp32, 3)}
                for a in outcome.attempts
            ],
            "sensitivity": outcome.ranking[:16],
            "ranked_by": outcome.ranked_by,
            "kept_by_target": outcome.policy_kept,
            "kept_by_gate": [k for k in result.kept_higher_precision if k not in outcome.policy_kept],
            "speed": outcome.speed,
        },
        "onnx": src.onnx_info,
        "calibration": {
            "source": (calib or held).source,
            **_calibration_facts(calib or held),
            "samples": len(calib) if calib else 0,
            "held_out": len(held),
            "method": calib.method if calib else None,
            "percentile": calib.percentile if calib and calib.method == "percentile" else None,
        },
        "portable_onnx": result.portable_onnx,
        "backend_info": result.extra,
        "notes": result.notes,
    }


def _calibration_facts(calib: CalibrationSet) -> dict[str, Any]:
    """Kind and content fingerprint of the calibration source: what calibration.json records too."""
    plan = calib.meta.get("plan") or {}
    return {"kind": plan.get("kind"), "fingerprint": plan.get("fingerprint"), "recipe": plan.get("recipe")}
