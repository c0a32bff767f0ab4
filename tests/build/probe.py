"""Run inside a fresh `python3.12 -I -S -B` whose sys.path is only a built bundle (like Lambda's): prints one JSON
object on stdout. Driven by tests/build/test_bundles.py; not a test module itself.

    python -I -S -B probe.py <check> --path DIR [--path DIR ...] --runtime DIR [--arg VALUE ...]

--path entries go first, in order (function code, then layers, as Lambda orders /var/task and /opt/python);
--runtime last (what the Lambda runtime provides: boto3, botocore, ...). Checks:
  predict        import the predict function, self-test and predict with its runtime (MODEL_*, SERVING_RUNTIME
                 from the environment)
  retrain        run the retrain function on a schedule event (DATA_URI, MODEL_STORE_URI from the environment)
  parquet FILE   read a Parquet file through training.dataset (fastparquet)
  imports PKG..  import every module of these packages (not tests, not __main__); report what fails
  importtime M.. milliseconds to import these modules
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import sysconfig
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class LambdaContext:
    function_name: str = "bundle-probe"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:bundle-probe"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def foreign_modules(roots: list[str]) -> list[str]:
    """Modules loaded from anywhere but the bundle, the runtime folder and the standard library."""
    allowed = tuple(
        [str(Path(r).resolve()) for r in roots]
        + [r for r in roots]
        + [sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib")]
        + [__file__]
    )
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if (path := getattr(module, "__file__", None)) and not path.startswith(allowed)
    )


def check_predict(args: argparse.Namespace) -> dict[str, Any]:
    import app  # type: ignore[import-not-found]  # the predict function's app.py, from the bundle

    from sklambda.serving import load_version

    context = LambdaContext()
    self_test = app.lambda_handler({"self_test": {"version": int(args.arg[0])}}, context)
    event = json.loads(Path(args.arg[1]).read_text())
    response = app.lambda_handler(event, context)
    manifest = app.store.served_manifest(app.settings.model_name, int(args.arg[0]))
    loaded = load_version(app.store, manifest, app.settings.serving_runtime)
    return {
        "runtime": app.settings.serving_runtime,
        "self_test": self_test,
        "status": response["statusCode"],
        "body": json.loads(response["body"]),
        "loaded": {"version": loaded.version, "runtime": loaded.runtime, "predictor": type(loaded.predictor).__name__},
    }


def check_retrain(args: argparse.Namespace) -> dict[str, Any]:
    """--arg EVENT, then one --arg per run: a training configuration file, or "" for the packaged one."""
    import app  # the retrain function's app.py, from the bundle
    import msgspec

    event = json.loads(Path(args.arg[0]).read_text())
    runs = []
    for config in args.arg[1:]:
        app.settings = msgspec.structs.replace(app.settings, training_config=config or None)
        outcome = app.lambda_handler(event, LambdaContext())
        if outcome["model"]["version"] is None:  # skipped (nothing new) or failed: no version to describe
            runs.append({"outcome": outcome})
            continue
        manifest = app.store.manifest(app.settings.model_name, outcome["model"]["version"])
        runs.append(
            {
                "outcome": outcome,
                "estimator": manifest.estimator,
                "runtimes": {name: support.supported for name, support in manifest.runtimes.items()},
                "onnx_bytes": len(app.store.artifact(manifest, "model.onnx")),
                "libraries": manifest.libraries,
                "code_version": manifest.code_version,
            }
        )
    return {"runs": runs}


def check_parquet(args: argparse.Namespace) -> dict[str, Any]:
    from training.dataset import load_table

    table = load_table(args.arg[0])
    return {"rows": len(table.frame), "columns": list(map(str, table.frame.columns))}


def check_imports(args: argparse.Namespace) -> dict[str, Any]:
    """Import every module of the packages. A failure counts unless it is a missing *optional* dependency: a
    top-level package that is not in the bundle at all (matplotlib, pyarrow, torch...)."""
    present = {m.name for m in pkgutil.iter_modules(sys.path)}
    imported, optional, broken = 0, set(), {}
    for package in args.arg:
        root = importlib.import_module(package)
        names = [package] + [
            info.name
            for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}.", onerror=lambda _: None)
            if not {"tests", "test", "__main__", "conftest"} & set(info.name.split("."))
        ]
        for name in names:
            try:
                importlib.import_module(name)
                imported += 1
            except ModuleNotFoundError as error:
                missing = (error.name or "").split(".")[0]
                if missing and missing not in present:
                    optional.add(missing)
                else:
                    broken[name] = f"{type(error).__name__}: {error}"
            except Exception as error:  # any other failure to import is a finding
                broken[name] = f"{type(error).__name__}: {error}"
    return {"imported": imported, "optional_missing": sorted(optional), "broken": broken}


def check_importtime(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    for name in args.arg:
        importlib.import_module(name)
    return {"ms": round((time.perf_counter() - started) * 1000, 1)}


RESULT_PREFIX = "probe-result: "

CHECKS = {
    "predict": check_predict,
    "retrain": check_retrain,
    "parquet": check_parquet,
    "imports": check_imports,
    "importtime": check_importtime,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("check", choices=sorted(CHECKS))
    parser.add_argument("--path", action="append", default=[])
    parser.add_argument("--runtime", required=True)
    parser.add_argument("--arg", action="append", default=[])
    args = parser.parse_args()
    sys.path[:0] = args.path
    sys.path.append(args.runtime)
    started = time.perf_counter()
    try:
        result: dict[str, Any] = {"ok": True, **CHECKS[args.check](args)}
    except BaseException as error:  # report, do not crash: the test prints it
        result = {"ok": False, "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    result["seconds"] = round(time.perf_counter() - started, 2)
    result["foreign_modules"] = foreign_modules([*args.path, args.runtime])
    result["pyc_written"] = sys.flags.dont_write_bytecode is False
    # Powertools Metrics print EMF lines on stdout too: the result is the line with this prefix.
    print(RESULT_PREFIX + json.dumps(result, default=str))


if __name__ == "__main__":
    main()
