"""Convert a fitted pipeline to ONNX for serving (skl2onnx), inputs in the contract's order.

Custom steps convert when a module registers a skl2onnx converter for them; the configuration names such
modules (`[onnx] converters`) and they are imported here, before conversion. A pipeline that still does not
convert is stored for the scikit-learn runtime only, and the manifest says why.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from typing import Any

from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType

from sklambda.contract import DataContract
from sklambda.errors import ConfigError
from sklambda.manifest import RuntimeSupport
from training.model import CUSTOM_CODE_HINT, final_estimator

logger = logging.getLogger(__name__)

SKLEARN_RUNTIME_HINT = (
    "serve it with the scikit-learn runtime (template parameter ServingRuntime=sklearn; on this machine "
    "--serving-runtime sklearn), or register a skl2onnx converter for the step that does not convert and name "
    "its module in [onnx] converters"
)


def import_converters(modules: Sequence[str]) -> None:
    """Import each module that registers skl2onnx converters (registration happens on import)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ConfigError(f"[onnx] converters: cannot import {module!r}: {error}; {CUSTOM_CODE_HINT}") from None


def to_onnx(
    pipeline: Any, contract: DataContract, converters: Sequence[str] = ()
) -> tuple[bytes | None, RuntimeSupport]:
    """The ONNX bytes, or None with the reason when the pipeline does not convert (serving then needs the
    scikit-learn runtime)."""
    import_converters(converters)
    initial_types = [
        (feature.name, FloatTensorType([None, 1]) if feature.kind == "numeric" else StringTensorType([None, 1]))
        for feature in contract.features
    ]
    options: dict[Any, Any] = {}
    if contract.task == "classification":
        # Plain probability tensors instead of a list of {class: p} maps: faster, and what serving reads.
        options[id(final_estimator(pipeline))] = {"zipmap": False}
    try:
        model = convert_sklearn(pipeline, initial_types=initial_types, options=options)
    except Exception as error:  # skl2onnx raises many types for "this step has no converter"
        detail = f"{type(error).__name__}: {error}".splitlines()[0][:500]
        logger.warning("pipeline does not convert to ONNX: %s", detail)
        return None, RuntimeSupport(
            supported=False, detail=f"does not convert to ONNX ({detail}): {SKLEARN_RUNTIME_HINT}"
        )
    opset = {entry.domain or "ai.onnx": entry.version for entry in model.opset_import}
    return model.SerializeToString(), RuntimeSupport(supported=True, artifact="model.onnx", opset=opset)
