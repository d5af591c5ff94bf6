"""The interactive lab: ipywidgets panels that call the core and the charts, and have no maths of their own.

Each panel is a class whose `.widget` is displayable alone (in JupyterLab or Voilà). Panels that need trained
models share one `ModelList` (noiselab.widgets.models), which the starter models fill when the lab opens and
the training panel adds to.
"""

from .models import LabModel, ModelList, load_starter_models

__all__ = ["LabModel", "ModelList", "load_starter_models"]
