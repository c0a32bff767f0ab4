"""The bundles `sam build` leaves in .aws-sam/build: each function's code folder and its layers' folders, as the
built template attaches them for given template parameters, and their unzipped sizes (what Lambda's 250 MiB
limit counts). Read by the benchmark's size table and by tests/build/test_bundles.py (the budgets), so both
count the same files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / ".aws-sam" / "build"
MiB = 1 << 20
LAMBDA_LIMIT_MIB = 250
# What the Lambda Python runtime provides on its own sys.path, after the layers.
LAMBDA_RUNTIME_MODULES = ("boto3", "botocore", "s3transfer", "urllib3", "jmespath", "dateutil", "six")


@dataclass(frozen=True)
class Bundle:
    """A function as deployed with some template parameters (those not given keep their defaults)."""

    function: str
    parameters: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        return self.function + "".join(f" [{name}={value}]" for name, value in self.parameters)


# Unzipped size budgets in MiB for function + all its layers (issue 7), below Lambda's hard limit of 250 MiB.
BUDGETS_MIB: dict[Bundle, int] = {
    Bundle("PredictFunction"): 125,
    Bundle("PredictFunction", (("ServingRuntime", "sklearn"),)): 230,
    Bundle("AdminFunction"): 125,
    # The promotion guard: the admin function's layers (shared code + the serving dependencies' pydantic/Powertools).
    Bundle("GuardFunction"): 125,
    # The predict rollout's pre-traffic check: the same layers again.
    Bundle("PredictPreTrafficFunction"): 125,
    Bundle("RetrainFunction"): 230,
    # Ground truth and the monitor: the shared code and the serving dependencies (numpy, pydantic, Powertools).
    Bundle("FeedbackFunction"): 125,
    Bundle("MonitorFunction"): 125,
}


def built_template(build: Path = BUILD) -> dict[str, Any]:
    from samcli.yamlhelper import yaml_parse

    template: dict[str, Any] = yaml_parse((build / "template.yaml").read_text())
    return template


def folders(bundle: Bundle, build: Path = BUILD) -> list[Path]:
    """The function's code folder, then its layers' folders, in the order Lambda puts them on sys.path."""
    template = built_template(build)
    resources = template["Resources"]
    properties = resources[bundle.function]["Properties"]
    parameters = dict(bundle.parameters)
    layer_ids = [_chosen(layer, template, parameters) for layer in properties.get("Layers", [])]
    layers = [build / resources[layer]["Properties"]["ContentUri"] for layer in layer_ids]
    return [build / properties["CodeUri"], *layers]


def functions(build: Path = BUILD) -> list[str]:
    resources = built_template(build)["Resources"]
    return sorted(name for name, resource in resources.items() if resource["Type"] == "AWS::Serverless::Function")


def _chosen(layer: Any, template: dict[str, Any], parameters: dict[str, str]) -> str:
    """The layer a function gets with these parameters (a `Fn::If` picks one of two)."""
    if "Fn::If" in layer:
        condition, when_true, when_false = layer["Fn::If"]
        holds = _condition(template["Conditions"][condition], template, parameters)
        return _chosen(when_true if holds else when_false, template, parameters)
    return str(layer["Ref"])


def _condition(expression: Any, template: dict[str, Any], parameters: dict[str, str]) -> bool:
    """Fn::Equals / Fn::Not / Condition over parameters: what the template's conditions use."""
    if "Fn::Equals" in expression:
        left, right = (_value(item, template, parameters) for item in expression["Fn::Equals"])
        return left == right
    if "Fn::Not" in expression:
        return not _condition(expression["Fn::Not"][0], template, parameters)
    if "Condition" in expression:
        return _condition(template["Conditions"][expression["Condition"]], template, parameters)
    raise ValueError(f"unsupported condition {expression}")


def _value(item: Any, template: dict[str, Any], parameters: dict[str, str]) -> str:
    if isinstance(item, dict) and "Ref" in item:
        name = item["Ref"]
        if name in parameters:
            return parameters[name]
        return str(template["Parameters"][name].get("Default"))
    return str(item)


def tree_bytes(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def bundle_mib(bundle: Bundle, build: Path = BUILD) -> float:
    return sum(tree_bytes(folder) for folder in folders(bundle, build)) / MiB


def describe(bundle: Bundle, build: Path = BUILD) -> str:
    """'ServingDepsLayer 106.1, SharedCodeLayer 0.2, ...': what the size is made of."""
    return ", ".join(f"{folder.name} {tree_bytes(folder) / MiB:.1f}" for folder in folders(bundle, build))


def site(folder: Path) -> Path:
    """Where a folder's modules are on sys.path: a layer's python/ (-> /opt/python), a function's root."""
    return folder / "python" if (folder / "python").is_dir() else folder


def sys_path(bundle: Bundle, build: Path = BUILD) -> list[Path]:
    return [site(folder) for folder in folders(bundle, build)]


def lambda_runtime_folder(folder: Path) -> Path:
    """Fill `folder` with what the Lambda runtime provides (links into this virtual environment)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in LAMBDA_RUNTIME_MODULES:
        module = __import__(name)
        source = Path(module.__file__ or "")
        target = source.parent if source.name == "__init__.py" else source
        link = folder / target.name
        if not link.exists():
            link.symlink_to(target)
    return folder


def main() -> int:
    for bundle, budget in BUDGETS_MIB.items():
        print(f"{bundle.label}: {bundle_mib(bundle):.1f} MiB of {budget} ({describe(bundle)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
