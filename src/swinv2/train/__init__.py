"""Training: recipe, optimiser groups and schedule, the loop, and the run folder."""

from .loop import evaluate, fit
from .optim import WarmupCosine, build_optimizer, layer_id, param_groups
from .recipe import TrainRecipe

__all__ = ["TrainRecipe", "WarmupCosine", "build_optimizer", "evaluate", "fit", "layer_id", "param_groups"]
