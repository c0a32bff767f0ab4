"""The serving runtimes' names, apart from sklambda.runtimes: settings validate them without importing numpy or
the data contract, which the runtimes need."""

from __future__ import annotations

from typing import Literal

RuntimeName = Literal["onnx", "sklearn"]
