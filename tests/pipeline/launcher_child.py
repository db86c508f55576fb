"""A real launcher process for tests/pipeline/test_trainjob_api.py: runs the launch-trainjob
component's body (components/trainjob.py) with plain stand-ins for its KFP artifacts, talking to
the Kubernetes API named by $KUBECONFIG. Usage: python launcher_child.py '<json keyword args>'."""

from __future__ import annotations

import json
import logging
import sys
from types import SimpleNamespace

from components.trainjob import launch_trainjob

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    kwargs = json.loads(sys.argv[1])
    dataset = SimpleNamespace(path="", metadata={"manifest_sha256": kwargs.pop("data_sha256")})
    print("launcher started", flush=True)
    launch_trainjob(dataset=dataset, lr_dataset=dataset, **kwargs)
