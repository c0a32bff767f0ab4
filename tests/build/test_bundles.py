"""The deployable bundles, as `sam build` leaves them in .aws-sam/build: each function + its layers fits its size
budget, and does the real work in a fresh interpreter that sees only the bundle (plus the standard library and
what the Lambda runtime provides: boto3, botocore...).

Skipped unless .aws-sam/build is fresh (built after the last change of the layers' requirements and by the
current layers/slim.py); .ci/check-bundles builds first and sets SKLAMBDA_REQUIRE_BUILD=1, which turns those skips
into failures. `python -m benchmarks.bundles` prints the sizes.
"""

from __future__ import annotations

import hashlib
import json
import marshal
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.bundles import (
    BUDGETS_MIB,
    BUILD,
    Bundle,
    bundle_mib,
    describe,
    functions,
    lambda_runtime_folder,
    sys_path,
)
from tests.unit.test_requirements import normalise, pins, read_requirements

pytestmark = pytest.mark.build

ROOT = Path(__file__).resolve().parents[2]
SLIM = ROOT / "layers" / "slim.py"
PROBE = Path(__file__).with_name("probe.py")
EVENTS = ROOT / "events"
PENGUINS_CSV = ROOT / "training" / "data" / "penguins.csv"

PREDICT_ONNX = Bundle("PredictFunction")
PREDICT_SKLEARN = Bundle("PredictFunction", (("ServingRuntime", "sklearn"),))
# Third-party layers built by layers/<name>/Makefile + layers/slim.py, and which .pyc they ship (see the Makefiles):
# all, none, or those of the modules the layer's cold start imports.
DEPS_LAYERS = {
    "ServingDepsLayer": (ROOT / "layers" / "serving" / "requirements.txt", "all"),
    "ServingSklearnDepsLayer": (ROOT / "layers" / "serving-sklearn" / "requirements.txt", "imported"),
    "TrainingDepsLayer": (ROOT / "layers" / "training" / "requirements.txt", "none"),
}
# Every module of these packages must import from the bundle, except these, which fail the same way in an
# unslimmed install: an optional dependency that raises ImportError, Windows-only code, a non-Python .so.
IMPORT_ALL = {
    "ServingDepsLayer": (
        "numpy",
        "onnxruntime",
        "aws_lambda_powertools",
        "pydantic",
        "pydantic_core",
        "orjson",
        "msgspec",
    ),
    "ServingSklearnDepsLayer": (
        "numpy",
        "scipy",
        "sklearn",
        "pandas",
        "joblib",
        "narwhals",
        "aws_lambda_powertools",
        "pydantic",
        "pydantic_core",
        "orjson",
        "msgspec",
    ),
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
        "msgspec",
    ),
}
KNOWN_IMPORT_FAILURES = {
    "pandas.io.formats.style": "needs jinja2 (DataFrame.style)",
    "pandas.io.formats.style_render": "needs jinja2 (DataFrame.style)",
    "joblib.externals.loky.backend._win_reduction": "Windows only",
    "onnxruntime.capi.libonnxruntime_providers_shared": "a shared library, not a Python module",
    "onnxruntime.tools.pytorch_export_contrib_ops": "needs PyTorch",
}
# Our own code as built (source folder -> where sam build put it): tests of a build older than the code are stale.
OUR_CODE = {
    ROOT / "layers" / "shared" / "sklambda": BUILD / "SharedCodeLayer" / "python" / "sklambda",
    ROOT / "training": BUILD / "TrainingCodeLayer" / "python" / "training",
    **{
        ROOT / "functions" / name: BUILD / f"{name.title()}Function"
        for name in ("predict", "retrain", "admin", "guard")
    },
    ROOT / "functions" / "pretraffic": BUILD / "PredictPreTrafficFunction",
}
REQUIRE_BUILD = os.environ.get("SKLAMBDA_REQUIRE_BUILD") == "1"
POWERTOOLS_ENV = {"POWERTOOLS_SERVICE_NAME": "bundle-test", "POWERTOOLS_METRICS_NAMESPACE": "BundleTest"}


# ------------------------------------------------------------------------------------------------ the build


def pinned_version(package: str) -> str:
    """The version requirements.txt pins for a package: the bundle must ship what training and tests use."""
    return pins(read_requirements(ROOT / "requirements.txt"))[normalise(package)].removeprefix("==")


def is_commit_of_this_checkout(commit: str) -> bool:
    """HEAD or one of its ancestors (`sam build --cached` keeps an unchanged layer, with the commit it was built at)."""
    ancestor = subprocess.run(["git", "-C", str(ROOT), "merge-base", "--is-ancestor", commit, "HEAD"], check=False)
    return len(commit) == 12 and ancestor.returncode == 0


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
    for source, built in OUR_CODE.items():
        changed = [
            path.relative_to(ROOT)
            for path in source.rglob("*.py")
            if not (built / path.relative_to(source)).is_file()
            or (built / path.relative_to(source)).read_bytes() != path.read_bytes()
        ]
        if changed:
            return f"{changed[0]} changed after the last build: run `make build`"
    return None


@pytest.fixture(scope="module")
def fresh_build() -> None:
    reason = stale_reason()
    if reason is not None:
        if REQUIRE_BUILD:
            pytest.fail(f"SKLAMBDA_REQUIRE_BUILD=1 but {reason}")
        pytest.skip(reason)


# ------------------------------------------------------------------------------------------------ the probe


@pytest.fixture(scope="module")
def lambda_runtime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with only what the Lambda runtime provides (links into this virtual environment)."""
    return lambda_runtime_folder(tmp_path_factory.mktemp("lambda-runtime"))


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


def bundle_paths(bundle: Bundle | str) -> list[Path]:
    return sys_path(bundle if isinstance(bundle, Bundle) else Bundle(bundle))


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


def _label(bundle: Bundle) -> str:
    return bundle.label


BUNDLES = sorted(BUDGETS_MIB, key=_label)


@pytest.mark.usefixtures("fresh_build")
def test_every_function_has_a_budget() -> None:
    # Given the functions in the built template
    # When looking up their budgets
    # Then none is missing (a new function must state what it may weigh)
    assert set(functions()) - {bundle.function for bundle in BUDGETS_MIB} == set()


@pytest.mark.usefixtures("fresh_build")
@pytest.mark.parametrize("bundle", BUNDLES, ids=_label)
def test_bundle_fits_its_budget(bundle: Bundle) -> None:
    # Given a function and the layers the template gives it with these parameters, as built
    # When adding up their files (the unzipped size Lambda counts)
    size = bundle_mib(bundle)
    # Then it is within the budget
    budget = BUDGETS_MIB[bundle]
    assert size <= budget, f"{bundle.label}: {size:.1f} MiB > {budget} MiB ({describe(bundle)})"


@pytest.mark.usefixtures("fresh_build")
def test_the_sklearn_runtime_gets_its_own_layer() -> None:
    # Given the predict function with each serving runtime
    # When reading the layers the template attaches
    onnx, sklearn = (bundle_paths(bundle) for bundle in (PREDICT_ONNX, PREDICT_SKLEARN))
    # Then each gets its runtime's layer, and the sklearn one has no onnxruntime
    assert BUILD / "ServingDepsLayer" / "python" in onnx
    assert BUILD / "ServingSklearnDepsLayer" / "python" in sklearn
    assert not (BUILD / "ServingSklearnDepsLayer" / "python" / "onnxruntime").exists()


def _pyc(source: Path) -> Path:
    return source.parent / "__pycache__" / f"{source.stem}.cpython-312.pyc"


@pytest.mark.usefixtures("fresh_build")
@pytest.mark.parametrize("layer", sorted(DEPS_LAYERS))
def test_layer_ships_pyc_as_decided(layer: str) -> None:
    # Given a third-party layer as built
    python = BUILD / layer / "python"
    decided = DEPS_LAYERS[layer][1]
    sources = list(python.rglob("*.py"))
    compiled = list(python.rglob("*.cpython-312.pyc"))
    assert slim_report(layer)["pyc"] == decided
    if decided == "none":
        # Then a layer built without .pyc has none (nor any left by a test run)
        assert compiled == []
        return
    missing = [s for s in sources if not _pyc(s).is_file()]
    if decided == "all":
        # Then every source has its .pyc
        assert missing == [], f"{len(missing)} sources without .pyc, e.g. {missing[:3]}"
    else:
        # Then the modules of the cold start have theirs (the Makefile's PYC_IMPORTS), and the rest do not
        for module in ("numpy/__init__.py", "pandas/__init__.py", "sklearn/pipeline.py", "scipy/sparse/__init__.py"):
            assert _pyc(python / module).is_file(), module
        assert missing, "every module has a .pyc: was the layer built with --pyc all?"
    # and they are unchecked-hash based (flags 0b01: valid whatever the mtimes after unzipping), recording their
    # /opt/python path
    flags = {int.from_bytes(pyc.read_bytes()[4:8], "little") for pyc in compiled}
    assert flags == {0b01}
    code = marshal.loads((python / "numpy" / "__pycache__" / "__init__.cpython-312.pyc").read_bytes()[16:])
    assert code.co_filename == "/opt/python/numpy/__init__.py"


@pytest.mark.usefixtures("fresh_build")
def test_shared_code_layer_ships_a_pyc_for_every_module() -> None:
    # Given our own code's layer as built (layers/shared/Makefile)
    python = BUILD / "SharedCodeLayer" / "python"
    sources = [*python.glob("sklambda/**/*.py"), *python.glob("sklambda_examples/**/*.py")]
    # Then every module has its .pyc (the cold start compiles none of them; /opt is read-only), unchecked-hash
    # based and naming its /opt/python path, as the third-party layers' are
    assert sources
    assert [source for source in sources if not _pyc(source).is_file()] == []
    assert {int.from_bytes(_pyc(source).read_bytes()[4:8], "little") for source in sources} == {0b01}
    code = marshal.loads(_pyc(python / "sklambda" / "serving.py").read_bytes()[16:])
    assert code.co_filename == "/opt/python/sklambda/serving.py"


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
@pytest.mark.parametrize("function", ["AdminFunction", "GuardFunction", "PredictPreTrafficFunction"])
def test_the_handler_starts_inside_its_bundle(function: str, tmp_path: Path, lambda_runtime: Path) -> None:
    # Given a function that the other build tests do not run, with its bundle alone on sys.path
    env = {
        **POWERTOOLS_ENV,
        "MODEL_STORE_URI": str(tmp_path / "store"),
        "MODEL_NAME": "penguins",
        "PREDICT_VERSION": "arn:aws:lambda:us-east-1:123456789012:function:sklambda-PredictFunction:1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    # When its handler module is imported as Lambda does at a cold start
    result = probe("importtime", bundle_paths(function), lambda_runtime, "app", env=env)
    # Then it loads, from the bundle and the runtime alone (the probe checks both)
    assert result["ms"] > 0


@pytest.mark.usefixtures("fresh_build")
@pytest.mark.parametrize(
    ("bundle", "runtime", "predictor"),
    [(PREDICT_ONNX, "onnx", "OnnxPredictor"), (PREDICT_SKLEARN, "sklearn", "SklearnPredictor")],
    ids=["onnx", "sklearn"],
)
def test_predict_bundle_serves_the_model_with_its_runtime(
    trained_store: Path, lambda_runtime: Path, bundle: Bundle, runtime: str, predictor: str
) -> None:
    # Given the predict bundle as deployed with this ServingRuntime (its own layer), and a store with a model
    # trained by `python -m training train`
    env = {**POWERTOOLS_ENV, "MODEL_STORE_URI": str(trained_store), "MODEL_NAME": "penguins"}
    env["SERVING_RUNTIME"] = runtime
    # When the handler self-tests v1 and answers events/predict.json, and load_version loads it for the runtime
    result = probe("predict", bundle_paths(bundle), lambda_runtime, "1", str(EVENTS / "predict.json"), env=env)
    # Then the runtime serves it from the slimmed layer: the golden self-test passes and both rows get a class
    assert result["runtime"] == runtime
    assert result["self_test"]["ok"], result["self_test"]
    assert result["status"] == 200, result["body"]
    assert len(result["body"]["predictions"]) == 2
    assert result["loaded"] == {"version": 1, "runtime": runtime, "predictor": predictor}


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
    stamped = (BUILD / "TrainingCodeLayer" / "python" / "training" / "CODE_VERSION").read_text().strip()
    # When the handler runs on the schedule event three times: first version, the same configuration on the same
    # data again, then a gradient-boosting challenger (tree converters)
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
    runs = result["runs"]
    # Then the second run found nothing new (same data, configuration and stamped code) and published nothing; a
    # build from uncommitted edits ("-dirty") never counts as the same code, so there it trains a challenger
    if stamped.endswith("-dirty"):
        assert [run["outcome"]["model"]["version"] for run in runs] == [1, 2, 3]
        assert runs[1]["outcome"]["champion"]["version"] == 1
    else:
        assert [run["outcome"]["model"]["version"] for run in runs] == [1, None, 2]
        assert runs[1]["outcome"]["status"] == "skipped", runs[1]
        assert "nothing new" in runs[1]["outcome"]["reason"], runs[1]
    trained = [run for run in runs if "estimator" in run]
    # and every run that trained converted to ONNX and was judged by the gate
    assert runs[0]["outcome"]["promoted"]
    assert all(run["runtimes"] == {"onnx": True, "sklearn": True} for run in trained), runs
    assert runs[2]["estimator"].endswith("HistGradientBoostingClassifier"), runs[2]
    assert runs[0]["libraries"]["scikit-learn"] == pinned_version("scikit-learn")
    # and each manifest names the commit the build stamped into the training layer (no git inside Lambda)
    assert is_commit_of_this_checkout(stamped.removesuffix("-dirty")), stamped
    assert {run["code_version"] for run in trained} == {stamped}


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
