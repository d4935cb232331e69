"""MLflow "model from code" entry: the pyfunc of a logged smp-segmenter.

MLflow executes this file when it loads the model (no pickled Python object is
stored); the weights come from the model's ``checkpoint`` artifact.
"""

from mlflow.models import set_model

from models.registry import SmpSegmenterPyfunc

set_model(SmpSegmenterPyfunc())
