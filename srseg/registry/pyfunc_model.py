"""MLflow "model from code" entry file of the SR head: MLflow executes it to build the pyfunc model.

``mlflow.pyfunc.save_model(python_model=<this file>)`` copies this file into the logged model and
``mlflow.pyfunc.load_model`` runs it, which is why it calls ``set_model`` at module level (MLflow's
contract for models from code) and holds nothing else. The logic lives in the installed package
(:class:`srseg.registry.loader.SRHeadPyfunc`), so the copy in the artifact store stays three lines
that a reviewer can read. srseg itself never imports this module.
"""

from mlflow.models import set_model

from srseg.registry.loader import SRHeadPyfunc

set_model(SRHeadPyfunc())
