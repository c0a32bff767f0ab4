"""Convert a fitted pipeline to ONNX for serving (skl2onnx), inputs in the contract's order."""

from __future__ import annotations

import logging
from typing import Any

from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType

from sklambda.contract import DataContract
from sklambda.manifest import RuntimeSupport

logger = logging.getLogger(__name__)


def to_onnx(pipeline: Any, contract: DataContract) -> tuple[bytes | None, RuntimeSupport]:
    """The ONNX bytes, or None with the reason when the pipeline does not convert (serving then needs the
    scikit-learn runtime)."""
    initial_types = [
        (feature.name, FloatTensorType([None, 1]) if feature.kind == "numeric" else StringTensorType([None, 1]))
        for feature in contract.features
    ]
    options: dict[Any, Any] = {}
    if contract.task == "classification":
        # Plain probability tensors instead of a list of {class: p} maps: faster, and what serving reads.
        options[id(pipeline.steps[-1][1])] = {"zipmap": False}
    try:
        model = convert_sklearn(pipeline, initial_types=initial_types, options=options)
    except Exception as error:  # skl2onnx raises many types for "this step has no converter"
        detail = f"{type(error).__name__}: {error}".splitlines()[0][:500]
        logger.warning("pipeline does not convert to ONNX: %s", detail)
        return None, RuntimeSupport(supported=False, detail=f"does not convert to ONNX: {detail}")
    opset = {entry.domain or "ai.onnx": entry.version for entry in model.opset_import}
    return model.SerializeToString(), RuntimeSupport(supported=True, artifact="model.onnx", opset=opset)
