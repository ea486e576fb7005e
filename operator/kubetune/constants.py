"""Names shared by the operator, the node agent, the CRDs and the tests: the API group and version,
each kind's plural/singular/short names, and the label/annotation/finalizer keys.

Change a name here and regenerate the CRDs (`python -m kubetune.api.crdgen`); nothing else spells them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GROUP = "kubetune.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# `kubectl get kubetune` lists every kubetune object.
CATEGORY = "kubetune"

LABEL_PREFIX = f"{GROUP}/"
ANNOTATION_PREFIX = f"{GROUP}/"
FINALIZER = f"{GROUP}/finalizer"


@dataclass(frozen=True)
class KindNames:
    """How one kind is spelled in the API (kind, plural, singular, short names) and its scope."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    scope: Literal["Namespaced", "Cluster"]

    @property
    def crd_name(self) -> str:
        """The CustomResourceDefinition's name, e.g. `performancepolicies.kubetune.io`."""
        return f"{self.plural}.{GROUP}"


PERFORMANCE_POLICY = KindNames("PerformancePolicy", "performancepolicies", "performancepolicy", ("pp",), "Namespaced")
NODE_TUNING_POLICY = KindNames("NodeTuningPolicy", "nodetuningpolicies", "nodetuningpolicy", ("ntp",), "Cluster")
NODE_TUNING = KindNames("NodeTuning", "nodetunings", "nodetuning", ("nt",), "Cluster")

ALL_KINDS = (PERFORMANCE_POLICY, NODE_TUNING_POLICY, NODE_TUNING)
