"""Convert a fitted pipeline to ONNX for serving (skl2onnx), inputs grouped by kind in the contract's order.

skl2onnx needs one input per column (a ColumnTransformer selects columns by name), so the pipeline converts with
those, and then `group_inputs` puts in front of them two inputs: every numeric feature in ONE float tensor
(rows x numeric features) and every categorical feature in ONE string tensor, split back into the per-column
tensors inside the graph. Serving then builds and passes two arrays whatever the table's width (measured on a
30-column table: ~1 us per column per request saved in the handler, and in ONNX Runtime's own call).

Custom steps convert when a module registers a skl2onnx converter for them; the configuration names such
modules (`[onnx] converters`) and they are imported here, before conversion. A pipeline that still does not
convert is stored for the scikit-learn runtime only, and the manifest says why.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import onnx
from onnx import TensorProto, helper
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
        with _options_taken_as_given(options):
            model = convert_sklearn(pipeline, initial_types=initial_types, options=options)
    except Exception as error:  # skl2onnx raises many types for "this step has no converter"
        detail = f"{type(error).__name__}: {error}".splitlines()[0][:500]
        logger.warning("pipeline does not convert to ONNX: %s", detail)
        return None, RuntimeSupport(
            supported=False, detail=f"does not convert to ONNX ({detail}): {SKLEARN_RUNTIME_HINT}"
        )
    group_inputs(model, contract)
    opset = {entry.domain or "ai.onnx": entry.version for entry in model.opset_import}
    return model.SerializeToString(), RuntimeSupport(supported=True, artifact="model.onnx", opset=opset)


@contextlib.contextmanager
def _options_taken_as_given(options: dict[Any, Any]) -> Iterator[None]:
    """skl2onnx resolves `options` (twice per conversion) by walking every attribute ending in "_" of every step,
    to map option names to steps and to pass a Pipeline's zipmap option on to its last step. On a fitted forest
    that walk reads `estimators_samples_` (every tree's bootstrap rows drawn again) and `feature_importances_`,
    ~1 s of a 100-tree forest's conversion on 80 000 rows, for nothing: these options are keyed by the id of the
    final estimator, never by a name or a Pipeline, and for such options skl2onnx's resolution returns them
    unchanged. During this conversion it returns them unchanged without the walk; any other options (none are
    passed here) still go through it."""
    import skl2onnx._parse as parse_module
    import skl2onnx.convert as convert_module

    resolve = getattr(convert_module, "_process_options", None)
    if not callable(resolve) or getattr(parse_module, "_process_options", None) is not resolve:
        # Another skl2onnx than the one this was written for: convert the usual way (slower for forests) rather
        # than fail, which would store every pipeline for the scikit-learn runtime only.
        yield
        return

    usual = cast("Callable[[Any, Any], Any]", resolve)

    def as_given(model: Any, given: Any) -> Any:
        return given if given is options else usual(model, given)

    convert_module._process_options = parse_module._process_options = as_given
    try:
        yield
    finally:
        convert_module._process_options = parse_module._process_options = resolve


# Input names of the grouped layout (the runtime tells the groups apart by element type, not by these names).
GROUPED_INPUTS = {"numeric": "numeric_features", "categorical": "categorical_features"}
_ELEMENT_TYPES = {"numeric": TensorProto.FLOAT, "categorical": TensorProto.STRING}


def group_inputs(model: onnx.ModelProto, contract: DataContract) -> None:
    """Replace the per-column inputs (one per contract feature, in contract order) by one input per kind of
    feature, split into the former per-column tensors by the graph's first nodes."""
    graph = model.graph
    if len(graph.input) != len(contract.features):
        raise ValueError(f"the converted graph has {len(graph.input)} inputs for {len(contract.features)} features")
    by_feature = dict(zip(contract.names, (node.name for node in graph.input), strict=True))
    taken = {name for node in graph.node for name in (*node.input, *node.output)} | set(by_feature.values())
    opset = next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
    inputs, nodes = [], []
    for kind, group in GROUPED_INPUTS.items():
        columns = [by_feature[feature.name] for feature in contract.features if feature.kind == kind]
        if not columns:
            continue
        while group in taken:
            group += "_"
        inputs.append(helper.make_tensor_value_info(group, _ELEMENT_TYPES[kind], [None, len(columns)]))
        if len(columns) == 1:
            nodes.append(helper.make_node("Identity", [group], columns, name=f"{group}_identity"))
        elif opset >= 13:  # split sizes as an input from opset 13 on
            sizes = f"{group}_split_sizes"
            graph.initializer.append(helper.make_tensor(sizes, TensorProto.INT64, [len(columns)], [1] * len(columns)))
            nodes.append(helper.make_node("Split", [group, sizes], columns, name=f"{group}_split", axis=1))
        else:
            nodes.append(
                helper.make_node("Split", [group], columns, name=f"{group}_split", axis=1, split=[1] * len(columns))
            )
    del graph.input[:]
    graph.input.extend(inputs)
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *existing])
    onnx.checker.check_model(model)
