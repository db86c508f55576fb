"""Build ``trainjob_v1alpha1.schema.json``: the TrainJob API of a released Kubeflow Trainer as a
strict JSON Schema (see README.md beside this file for the provenance and the rules).

    python tests/pipeline/trainjob_crd/make_schema.py        # rewrites the schema file

Fields and types come from the released API package (``kubeflow-trainer-api``, the Python models
Kubeflow generates from the Trainer's OpenAPI spec), turned into a JSON Schema by pydantic. The
constraints of the CRD's ``openAPIV3Schema`` that the models do not carry (lengths, item counts,
minimums, the quantity pattern, the restricted patch metadata) are added from ``CRD_RULES``,
transcribed from the CRD. Every object that lists its properties gets ``additionalProperties:
false``: the API server would silently prune an unknown (e.g. misspelt) field; a test must fail.
"""

from __future__ import annotations

import json
from copy import deepcopy
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCHEMA_FILE = HERE / "trainjob_v1alpha1.schema.json"
PACKAGE, RELEASE = "kubeflow-trainer-api", "2.2.0"
CRD_SOURCE = (
    "kubeflow/trainer",
    "manifests/base/crds/trainer.kubeflow.org_trainjobs.yaml",
    "0f13bb7a01973a1717651000c746d634bd4161e9",
)

# The CRD's Kubernetes quantity pattern (x-kubernetes-int-or-string: an integer, or a string that matches).
QUANTITY = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
INT32 = {"minimum": -(2**31), "maximum": 2**31 - 1}
PATCH_METADATA = {  # JobSet/Job/Pod template metadata in a runtime patch: the CRD allows only these
    "type": "object",
    "properties": {
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "name": {"type": "string"},
        "namespace": {"type": "string"},
    },
    "additionalProperties": False,
}
# (definition, property) -> keywords from the CRD's openAPIV3Schema (CRD_SOURCE), merged into the property.
CRD_RULES: dict[tuple[str, str], dict[str, Any]] = {
    ("TrainerV1alpha1TrainJobSpec", "activeDeadlineSeconds"): {"minimum": 1, "maximum": 2**63 - 1},
    # CEL: self in ['trainer.kubeflow.org/trainjob-controller', 'kueue.x-k8s.io/multikueue']
    ("TrainerV1alpha1TrainJobSpec", "managedBy"): {
        "maxLength": 253,
        "enum": ["trainer.kubeflow.org/trainjob-controller", "kueue.x-k8s.io/multikueue"],
    },
    ("TrainerV1alpha1TrainJobSpec", "runtimePatches"): {"maxItems": 16},
    ("TrainerV1alpha1RuntimePatch", "manager"): {"minLength": 1, "maxLength": 253},
    ("TrainerV1alpha1JobSetSpecPatch", "replicatedJobs"): {"maxItems": 100},
    ("TrainerV1alpha1ReplicatedJobPatch", "name"): {"minLength": 1, "maxLength": 253},
    ("TrainerV1alpha1PodSpecPatch", "volumes"): {"maxItems": 128},
    ("TrainerV1alpha1JobSetTemplatePatch", "metadata"): PATCH_METADATA,
    ("TrainerV1alpha1JobTemplatePatch", "metadata"): PATCH_METADATA,
    ("TrainerV1alpha1PodTemplatePatch", "metadata"): PATCH_METADATA,
    ("TrainerV1alpha1RuntimeRef", "name"): {"minLength": 1, "maxLength": 253},
    ("TrainerV1alpha1RuntimeRef", "apiGroup"): {"maxLength": 253},
    ("TrainerV1alpha1RuntimeRef", "kind"): {"maxLength": 253},
    ("TrainerV1alpha1Trainer", "image"): {"maxLength": 500},
    ("TrainerV1alpha1Trainer", "command"): {"maxItems": 128, "items": {"type": "string", "maxLength": 65536}},
    ("TrainerV1alpha1Trainer", "args"): {"maxItems": 128, "items": {"type": "string", "maxLength": 65536}},
    ("TrainerV1alpha1Trainer", "env"): {"maxItems": 128},
    ("TrainerV1alpha1Trainer", "numNodes"): INT32,
    ("TrainerV1alpha1Trainer", "numProcPerNode"): INT32,
}
REPLACED_DEFS = {  # the generated models' one-of wrappers, written as the CRD writes them
    "IoK8sApimachineryPkgApiResourceQuantity": {
        "anyOf": [{"type": "integer"}, {"type": "string", "pattern": QUANTITY}]
    },
    "IoK8sApimachineryPkgUtilIntstrIntOrString": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
}
DROPPED = {"description", "title", "default", "examples"}


def _strict(node: Any) -> Any:
    """Drop prose, unwrap Optional (anyOf X | null), close every object that lists properties."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {k: v for k, v in node.items() if k not in DROPPED}
    options = node.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        node.pop("anyOf")
        node = {**node, **rest[0]} if len(rest) == 1 else {**node, "anyOf": rest}
    node = {k: _strict(v) for k, v in node.items()}
    if "properties" in node and "additionalProperties" not in node:
        node["additionalProperties"] = False
    return node


def build_schema() -> dict[str, Any]:
    """The strict TrainJob schema from the installed release of the API package (must be RELEASE)."""
    installed = metadata.version(PACKAGE)
    if installed != RELEASE:
        raise RuntimeError(f"{PACKAGE} {installed} is installed; this schema is pinned to {RELEASE}")
    from kubeflow_trainer_api.models.trainer_v1alpha1_train_job import TrainerV1alpha1TrainJob

    raw = TrainerV1alpha1TrainJob.model_json_schema(by_alias=True, mode="validation")
    defs = {name: _strict(node) for name, node in raw.pop("$defs").items()}
    defs.update(deepcopy(REPLACED_DEFS))
    for (definition, prop), rules in CRD_RULES.items():
        target = defs[definition]["properties"]
        if prop not in target:
            raise KeyError(f"CRD rule for {definition}.{prop}: the released model has no such field")
        target[prop] = {**target[prop], **deepcopy(rules)} if "$ref" not in target[prop] else deepcopy(rules)
    root = _strict(raw)
    repo, path, commit = CRD_SOURCE
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": (
            f"TrainJob trainer.kubeflow.org/v1alpha1: fields and types from {PACKAGE}=={RELEASE} (PyPI), "
            f"constraints from {repo}/{path}@{commit}; generated by make_schema.py, see README.md"
        ),
        **root,
        "$defs": dict(sorted(defs.items())),
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=1, sort_keys=False) + "\n"


if __name__ == "__main__":
    SCHEMA_FILE.write_text(render(build_schema()))
    print(f"wrote {SCHEMA_FILE}")
