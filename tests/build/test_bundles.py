"""The deployable bundles, as `sam build` leaves them in .aws-sam/build: each function + its layers fits its size
budget, and does the real work in a fresh interpreter that sees only the bundle (plus the standard library and
what the Lambda runtime provides: boto3, botocore...).

Skipped unless .aws-sam/build is fresh (built after the last change of the layers' requirements and by the
current layers/slim.py); .ci/check-bundles builds first and sets SKLAMBDA_REQUIRE_BUILD=1, which turns those skips
into failures. `python tests/build/test_bundles.py` prints the sizes.
"""

from __future__ import annotations

import hashlib
import json
import marshal
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.build

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / ".aws-sam" / "build"
SLIM = ROOT / "layers" / "slim.py"
PROBE = Path(__file__).with_name("probe.py")
EVENTS = ROOT / "events"
PENGUINS_CSV = ROOT / "training" / "data" / "penguins.csv"
MiB = 1 << 20

# Unzipped size budgets in MiB for function + all its layers (issue 7); Lambda's hard limit is 250 MiB.
# A future scikit-learn serving function (predict with the sklearn runtime) gets 230.
BUDGETS_MIB = {
    "AdminFunction": 125,
    # The promotion guard: the admin function's layers (shared code + the serving dependencies' pydantic/Powertools).
    "GuardFunction": 125,
    "PredictFunction": 125,
    "RetrainFunction": 230,
}
# Third-party layers built by layers/<name>/Makefile + layers/slim.py, and whether they ship .pyc (see the Makefiles).
DEPS_LAYERS = {
    "ServingDepsLayer": (ROOT / "layers" / "serving" / "requirements.txt", True),
    "TrainingDepsLayer": (ROOT / "layers" / "training" / "requirements.txt", False),
}
# What the Lambda Python runtime provides on its own sys.path, after the layers.
LAMBDA_RUNTIME_MODULES = ("boto3", "botocore", "s3transfer", "urllib3", "jmespath", "dateutil", "six")
# Every module of these packages must import from the bundle, except these, which fail the same way in an
# unslimmed install: an optional dependency that raises ImportError, Windows-only code, a non-Python .so.
IMPORT_ALL = {
    "ServingDepsLayer": ("numpy", "onnxruntime", "aws_lambda_powertools", "pydantic", "pydantic_core", "orjson"),
    "TrainingDepsLayer": (
        "numpy",
        "scipy",
        "sklearn",
        "pandas",
        "skl2onnx",
        "onnx",
        "fastparquet",
        "cramjam",
        "joblib",
        "fsspec",
        "narwhals",
        "ml_dtypes",
        "aws_lambda_powertools",
        "pydantic",
    ),
}
KNOWN_IMPORT_FAILURES = {
    "pandas.io.formats.style": "needs jinja2 (DataFrame.style)",
    "pandas.io.formats.style_render": "needs jinja2 (DataFrame.style)",
    "joblib.externals.loky.backend._win_reduction": "Windows only",
    "onnxruntime.capi.libonnxruntime_providers_shared": "a shared library, not a Python module",
    "onnxruntime.tools.pytorch_export_contrib_ops": "needs PyTorch",
}
REQUIRE_BUILD = os.environ.get("SKLAMBDA_REQUIRE_BUILD") == "1"
POWERTOOLS_ENV = {"POWERTOOLS_SERVICE_NAME": "bundle-test", "POWERTOOLS_METRICS_NAMESPACE": "BundleTest"}


# ------------------------------------------------------------------------------------------------ the build


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def slim_report(layer: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((BUILD / layer / "slim-report" / f"{layer}.json").read_text())
    return report


def stale_reason() -> str | None:
    """Why .aws-sam/build cannot be tested, or None when it is a fresh build of these sources."""
    built_template = BUILD / "template.yaml"
    if not built_template.is_file():
        return "no .aws-sam/build: run `make build` (or .ci/check-bundles)"
    for layer, (requirements, _) in DEPS_LAYERS.items():
        if built_template.stat().st_mtime < requirements.stat().st_mtime:
            return f"{requirements.relative_to(ROOT)} changed after the last build: run `make build`"
        if not (BUILD / layer / "slim-report" / f"{layer}.json").is_file():
            return f"{layer} was not built by its Makefile (no slim report): run `make build`"
        report = slim_report(layer)
        if report["requirements_sha256"] != sha256(requirements):
            return f"{layer} was built from another {requirements.relative_to(ROOT)}: run `make build`"
        if report["slim_py_sha256"] != sha256(SLIM):
            # `sam build --cached` (samconfig.toml) keys a layer on its own folder only, not on layers/slim.py.
            return f"{layer} was slimmed by another layers/slim.py: rebuild with `sam build --no-cached`"
    return None


@pytest.fixture(scope="module")
def fresh_build() -> None:
    reason = stale_reason()
    if reason is not None:
        if REQUIRE_BUILD:
            pytest.fail(f"SKLAMBDA_REQUIRE_BUILD=1 but {reason}")
        pytest.skip(reason)


@cache
def bundles() -> dict[str, list[Path]]:
    """{function: [its code folder, then its layers' folders]} read from the built template."""
    from samcli.yamlhelper import yaml_parse

    template = yaml_parse((BUILD / "template.yaml").read_text())
    resources = template["Resources"]
    found = {}
    for name, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        properties = resource["Properties"]
        layer_ids = [_chosen(layer, template) for layer in properties.get("Layers", [])]
        layers = [BUILD / resources[layer]["Properties"]["ContentUri"] for layer in layer_ids]
        found[name] = [BUILD / properties["CodeUri"], *layers]
    return found


def _chosen(layer: Any, template: dict[str, Any]) -> str:
    """The layer a function gets with the template's default parameters (a `Fn::If` picks one of two)."""
    if "Fn::If" in layer:
        condition, when_true, when_false = layer["Fn::If"]
        return _chosen(when_true if _condition(template["Conditions"][condition], template) else when_false, template)
    return str(layer["Ref"])


def _condition(expression: Any, template: dict[str, Any]) -> bool:
    """Fn::Equals / Fn::Not / Condition over parameter defaults: what the template's conditions use."""
    if "Fn::Equals" in expression:
        left, right = (_value(item, template) for item in expression["Fn::Equals"])
        return left == right
    if "Fn::Not" in expression:
        return not _condition(expression["Fn::Not"][0], template)
    if "Condition" in expression:
        return _condition(template["Conditions"][expression["Condition"]], template)
    raise ValueError(f"unsupported condition {expression}")


def _value(item: Any, template: dict[str, Any]) -> str:
    if isinstance(item, dict) and "Ref" in item:
        return str(template["Parameters"][item["Ref"]].get("Default"))
    return str(item)


def tree_bytes(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def bundle_mib(function: str) -> float:
    return sum(tree_bytes(folder) for folder in bundles()[function]) / MiB


def site(folder: Path) -> Path:
    """Where a folder's modules are on sys.path: a layer's python/ (-> /opt/python), a function's root."""
    return folder / "python" if (folder / "python").is_dir() else folder


# ------------------------------------------------------------------------------------------------ the probe


@pytest.fixture(scope="module")
def lambda_runtime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with only what the Lambda runtime provides (links into this virtual environment)."""
    folder = tmp_path_factory.mktemp("lambda-runtime")
    for name in LAMBDA_RUNTIME_MODULES:
        spec = __import__(name)
        source = Path(spec.__file__ or "")
        target = source.parent if source.name == "__init__.py" else source
        (folder / target.name).symlink_to(target)
    return folder


def probe(check: str, paths: list[Path], runtime: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run tests/build/probe.py in `python -I -S -B` (no site-packages, no bytecode written into the build)."""
    command = [sys.executable, "-I", "-S", "-B", str(PROBE), check, "--runtime", str(runtime)]
    command += [f"--path={path}" for path in paths] + [f"--arg={arg}" for arg in args]
    environment = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **(env or {})}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("probe-result: ")]
    assert lines, f"probe {check} printed no result (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
    result = json.loads(lines[-1].removeprefix("probe-result: "))
    assert result["ok"], f"probe {check} failed: {result.get('traceback') or result}"
    assert result["foreign_modules"] == [], f"modules loaded from outside the bundle: {result['foreign_modules']}"
    return result


def bundle_paths(function: str) -> list[Path]:
    return [site(folder) for folder in bundles()[function]]


@pytest.fixture(scope="module")
def trained_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding penguins v1, trained by `python -m training train` in this environment."""
    store = tmp_path_factory.mktemp("store")
    subprocess.run(
        [sys.executable, "-m", "training", "train", "--data", str(PENGUINS_CSV)],
        cwd=ROOT,
        env={**os.environ, "MODEL_STORE_URI": str(store)},
        check=True,
        capture_output=True,
        timeout=300,
    )
    return store


# ------------------------------------------------------------------------------------------------ tests


@pytest.mark.usefixtures("fresh_build")
def test_every_function_has_a_budget() -> None:
    # Given the functions in the built template
    # When looking up their budgets
    # Then none is missing (a new function must state what it may weigh)
    assert set(bundles()) - set(BUDGETS_MIB) == set()


@pytest.mark.usefixtures("fresh_build")
@pytest.mark.parametrize("function", sorted(BUDGETS_MIB))
def test_bundle_fits_its_budget(function: str) -> None:
    # Given a function and its layers as built
    # When adding up their files (the unzipped size Lambda counts)
    size = bundle_mib(function)
    # Then it is within the budget
    parts = ", ".join(f"{folder.name} {tree_bytes(folder) / MiB:.1f}" for folder in bundles()[function])
    assert size <= BUDGETS_MIB[function], f"{function}: {size:.1f} MiB > {BUDGETS_MIB[function]} MiB ({parts})"


@pytest.mark.usefixtures("fresh_build")
@pytest.mark.parametrize("layer", sorted(DEPS_LAYERS))
def test_layer_ships_pyc_as_decided(layer: str) -> None:
    # Given a third-party layer as built
    python = BUILD / layer / "python"
    sources = list(python.rglob("*.py"))
    compiled = list(python.rglob("*.cpython-312.pyc"))
    if not DEPS_LAYERS[layer][1]:
        # Then a layer built without .pyc has none (nor any left by a test run)
        assert compiled == []
        return
    # Then every source has its .pyc, unchecked-hash based (flags 0b01: valid whatever the mtimes after unzipping),
    # recording its /opt/python path
    missing = [s for s in sources if not (s.parent / "__pycache__" / f"{s.stem}.cpython-312.pyc").is_file()]
    assert missing == [], f"{len(missing)} sources without .pyc, e.g. {missing[:3]}"
    flags = {int.from_bytes(pyc.read_bytes()[4:8], "little") for pyc in compiled}
    assert flags == {0b01}
    code = marshal.loads((python / "numpy" / "__pycache__" / "__init__.cpython-312.pyc").read_bytes()[16:])
    assert code.co_filename == "/opt/python/numpy/__init__.py"


@pytest.mark.usefixtures("fresh_build")
@pytest.mark.parametrize("layer", sorted(DEPS_LAYERS))
def test_layer_leaves_the_aws_sdk_to_the_runtime(layer: str) -> None:
    # Given a third-party layer as built
    # When looking for the AWS SDK
    shipped = {p.name for p in (BUILD / layer / "python").iterdir()} & {"boto3", "botocore", "s3transfer"}
    # Then it is not there: the Lambda runtime provides it
    assert shipped == set()


@pytest.mark.usefixtures("fresh_build")
@pytest.mark.parametrize("layer", sorted(IMPORT_ALL))
def test_every_module_of_the_slimmed_layer_imports(layer: str, lambda_runtime: Path) -> None:
    # Given a slimmed layer alone on sys.path
    # When importing every module of its packages (this loads every stripped extension module too)
    result = probe("imports", [BUILD / layer / "python"], lambda_runtime, *IMPORT_ALL[layer])
    # Then only the known failures of the unslimmed install remain
    unexpected = {name: error for name, error in result["broken"].items() if name not in KNOWN_IMPORT_FAILURES}
    assert unexpected == {}
    assert result["imported"] > 500


@pytest.mark.usefixtures("fresh_build")
def test_predict_bundle_serves_an_onnx_model(trained_store: Path, lambda_runtime: Path) -> None:
    # Given the predict bundle, and a store with a model trained by `python -m training train`
    env = {**POWERTOOLS_ENV, "MODEL_STORE_URI": str(trained_store), "MODEL_NAME": "penguins"}
    # When the handler self-tests v1 and answers events/predict.json, and load_version loads it for ONNX
    result = probe(
        "predict", bundle_paths("PredictFunction"), lambda_runtime, "1", str(EVENTS / "predict.json"), env=env
    )
    # Then ONNX Runtime serves it: the golden self-test passes and both rows get a class
    assert result["runtime"] == "onnx"
    assert result["self_test"]["ok"], result["self_test"]
    assert result["status"] == 200, result["body"]
    assert len(result["body"]["predictions"]) == 2
    assert result["loaded"] == {"version": 1, "runtime": "onnx", "predictor": "OnnxPredictor"}


@pytest.mark.usefixtures("fresh_build")
def test_retrain_bundle_trains_converts_and_publishes(tmp_path: Path, lambda_runtime: Path) -> None:
    # Given the retrain bundle, the sample data and an empty store; the gate's self-test runs in-process with the
    # scikit-learn runtime (the bundle has no onnxruntime; in the cloud it asks the predict function)
    forest = tmp_path / "forest.toml"
    forest.write_text(
        (ROOT / "training" / "config.toml")
        .read_text()
        .replace('"sklearn.linear_model:LogisticRegression"', '"sklearn.ensemble:HistGradientBoostingClassifier"')
    )
    env = {
        **POWERTOOLS_ENV,
        "MODEL_STORE_URI": str(tmp_path / "store"),
        "MODEL_NAME": "penguins",
        "DATA_URI": str(PENGUINS_CSV),
        "SERVING_RUNTIME": "sklearn",
    }
    # When the handler runs on the schedule event three times: first version, a challenger of the same
    # configuration, then a gradient-boosting challenger (tree converters)
    result = probe(
        "retrain",
        bundle_paths("RetrainFunction"),
        lambda_runtime,
        str(EVENTS / "retrain-schedule.json"),
        "",
        "",
        str(forest),
        env=env,
    )
    # Then every run trained, converted to ONNX and was judged by the gate
    runs = result["runs"]
    assert [run["outcome"]["model"]["version"] for run in runs] == [1, 2, 3]
    assert runs[0]["outcome"]["promoted"]
    assert runs[1]["outcome"]["champion"]["version"] == 1
    assert all(run["runtimes"] == {"onnx": True, "sklearn": True} for run in runs), runs
    assert runs[2]["estimator"].endswith("HistGradientBoostingClassifier"), runs[2]
    assert runs[0]["libraries"]["scikit-learn"] == "1.9.1"


@pytest.mark.usefixtures("fresh_build")
def test_the_bundles_train_and_serve_the_example_pipeline_with_its_custom_step(
    tmp_path: Path, lambda_runtime: Path
) -> None:
    # Given the retrain bundle with TRAINING_CONFIG naming the second example (its custom transformer comes from
    # the SharedCodeLayer, its ONNX converter too), as it is written from the checkout's root
    env = {
        **POWERTOOLS_ENV,
        "MODEL_STORE_URI": str(tmp_path / "store"),
        "MODEL_NAME": "penguins-ratios",
        "DATA_URI": str(PENGUINS_CSV),
        "SERVING_RUNTIME": "sklearn",
    }
    # When the retrain handler runs on the schedule event
    result = probe(
        "retrain",
        bundle_paths("RetrainFunction"),
        lambda_runtime,
        str(EVENTS / "retrain-schedule.json"),
        "training/examples/forest_ratios.toml",
        env=env,
    )
    # Then it trained that pipeline, converted it to ONNX with the custom step and promoted it
    (run,) = result["runs"]
    assert run["outcome"]["promoted"], run["outcome"]
    assert run["estimator"].endswith("RandomForestClassifier"), run
    assert run["runtimes"] == {"onnx": True, "sklearn": True}
    # And the predict bundle (ONNX Runtime, no scikit-learn) self-tests and serves it
    env.pop("SERVING_RUNTIME")
    served = probe(
        "predict", bundle_paths("PredictFunction"), lambda_runtime, "1", str(EVENTS / "predict.json"), env=env
    )
    assert served["self_test"]["ok"], served["self_test"]
    assert served["status"] == 200, served["body"]
    assert served["body"]["model"] == {"name": "penguins-ratios", "version": 1}


@pytest.mark.usefixtures("fresh_build")
# pandas 3.1 deprecates its fastparquet engine (training.dataset uses it): noise for this test, not a failure.
@pytest.mark.filterwarnings("ignore:The 'fastparquet' engine is deprecated")
@pytest.mark.filterwarnings("ignore:The 'future.infer_string' option is deprecated")
def test_retrain_bundle_reads_parquet(tmp_path: Path, lambda_runtime: Path) -> None:
    # Given the sample data as Parquet (written here with fastparquet)
    import pandas as pd

    parquet = tmp_path / "penguins.parquet"
    pd.read_csv(PENGUINS_CSV).to_parquet(parquet, engine="fastparquet")
    # When the retrain bundle's loader reads it
    result = probe("parquet", bundle_paths("RetrainFunction"), lambda_runtime, str(parquet))
    # Then every row is there
    assert result["rows"] == 344


if __name__ == "__main__":
    print(stale_reason() or "fresh build")
    for function, folders in sorted(bundles().items()):
        parts = ", ".join(f"{folder.name} {tree_bytes(folder) / MiB:.1f}" for folder in folders)
        print(f"{function}: {bundle_mib(function):.1f} MiB of {BUDGETS_MIB.get(function)} ({parts})")
