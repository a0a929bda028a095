"""Adaptive Width Neural Networks (AWNN): adaptive MLP layers, their stacked form, ELBO helpers.

Modules: importance (conventions, width rule, kaiming+ scale), mlp (AdaptiveMLP), fused (its
forward pass as one autograd node), layout (every weight and bias in one flat θ), capacity (the
active blocks inside θ, resizes in place), stacked (StackedAdaptiveMLP), members (a stacked
member's state in the unstacked format), classifier (stack_adaptive), storage
(growth draws, optimiser-state moves), training (width updates, priors, truncation), config
(model=awnn_mlp).
"""
from models.awnn.config import AdaptiveMLPConfig, build
from models.awnn.importance import (IMPORTANCES, Importance, importance, sum_sq_importance,
                                    target_width, width_for)
from models.awnn.mlp import GAINS, GROW_INITS, INITS, AdaptiveMLP
from models.awnn.classifier import StackedAdaptiveClassifier, stack_adaptive
from models.awnn.stacked import StackedAdaptiveMLP
from models.awnn.training import (adaptive_modules, add_theta_prior_grad, flat_optimizer_state,
                                  log_prior_nu, log_prior_theta, theta_parameters, theta_penalty,
                                  truncate, truncate_to_accuracy, update_widths)

REGISTERED = {"awnn_mlp": ("AdaptiveMLPConfig", "build")}   # the model registry (models/__init__.py)
stack_members = stack_adaptive                                 # stackable (docs/STACKING.md)

__all__ = ["AdaptiveMLP", "AdaptiveMLPConfig", "GAINS", "GROW_INITS", "IMPORTANCES", "INITS",
           "Importance", "StackedAdaptiveClassifier", "StackedAdaptiveMLP", "adaptive_modules",
           "add_theta_prior_grad", "build", "flat_optimizer_state", "importance", "log_prior_nu", "log_prior_theta",
           "stack_adaptive", "sum_sq_importance", "target_width", "theta_parameters",
           "theta_penalty", "truncate", "truncate_to_accuracy", "update_widths", "width_for"]
