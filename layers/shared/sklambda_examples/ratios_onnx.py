"""The skl2onnx converter of RatioFeatures, registered when this module is imported.

Training imports it before converting because the configuration names it (`[onnx] converters`). It is a module
of its own because skl2onnx exists only where training runs: ratios.py must stay importable by the
scikit-learn serving runtime, which has no skl2onnx.

The graph: Gather each pair's two columns, Div, Where(denominator == 0, NaN, ratio), Concat after the input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from skl2onnx import update_registered_converter
from skl2onnx.algebra.onnx_ops import OnnxConcat, OnnxDiv, OnnxEqual, OnnxGather, OnnxWhere
from skl2onnx.common.data_types import guess_numpy_type

from sklambda_examples.ratios import RatioFeatures


def _input_width(operator: Any) -> int | None:
    widths = [variable.get_second_dimension() for variable in operator.inputs]
    return None if any(width is None for width in widths) else sum(widths)


def ratio_features_shape(operator: Any) -> None:
    width = _input_width(operator)
    pairs = len(operator.raw_operator.pairs)
    operator.outputs[0].type = operator.inputs[0].type.__class__([None, None if width is None else width + pairs])


def ratio_features_converter(scope: Any, operator: Any, container: Any) -> None:
    model: RatioFeatures = operator.raw_operator
    opset = container.target_opset
    dtype = guess_numpy_type(operator.inputs[0].type)
    # Several inputs (the step used outside a ColumnTransformer branch): one matrix, in input order, as
    # scikit-learn sees them.
    values: Any = (
        operator.inputs[0] if len(operator.inputs) == 1 else OnnxConcat(*operator.inputs, axis=1, op_version=opset)
    )
    zero = np.array([0], dtype=dtype)
    missing = np.array([np.nan], dtype=dtype)
    columns = [values]
    for numerator, denominator in model.pair_indices_:
        top = OnnxGather(values, np.array([numerator], dtype=np.int64), axis=1, op_version=opset)
        bottom = OnnxGather(values, np.array([denominator], dtype=np.int64), axis=1, op_version=opset)
        quotient = OnnxDiv(top, bottom, op_version=opset)
        columns.append(OnnxWhere(OnnxEqual(bottom, zero, op_version=opset), missing, quotient, op_version=opset))
    result = OnnxConcat(*columns, axis=1, op_version=opset, output_names=operator.outputs[:1])
    result.add_to(scope, container)


update_registered_converter(
    RatioFeatures, "SklambdaExamplesRatioFeatures", ratio_features_shape, ratio_features_converter
)
