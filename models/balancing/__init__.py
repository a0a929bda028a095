"""Synaptic neural balancing (NB §2, App. B) for FCNs, ReLU RNNs, Transformer FFNs and DFA nets,
and for stacked models (docs/STACKING.md) per member in one vectorised pass.

A model is described as a list of `UnitGroup`s: one per hidden layer of BiLU neurons. Neuron i of
a group owns index i of its incoming slices (weight rows, biases), of its outgoing slices (next
weight columns) and, in a recurrent layer, row i (incoming) and column i (outgoing) of the square
recurrent matrix. Scaling neuron i by λ multiplies its incoming slices by λ and divides its
outgoing slices by λ; the network function is unchanged (NB Thm B.5, BiLU homogeneity).

Costs are Lp costs: A_i = Σ_in |w|^p, B_i = Σ_out |w|^p. The recurrent self weight W_hh[i, i] is
both incoming and outgoing, hence invariant, and is left out of both (SPEC A.1).

Modules: groups (model -> groups), costs (A, B and their cache), scaling (applying λ), sweeps
(partial and full balance), newton (the direct full-balance solver), tied (one λ per layer),
optimizer_state (rescaling momentum / Adam moments), result (what a call reports).
"""
from __future__ import annotations

from models.balancing.costs import (ZERO_COST, CostCache, max_log_imbalance,
                                    neuron_costs, total_cost)
from models.balancing.groups import (ACTIVATION_TYPES, PASS_THROUGH, Slice, UnitGroup,
                                     chain_groups, chain_groups_from_params, ffn_groups,
                                     rnn_groups, unit_groups)
from models.balancing.optimizer_state import rescale_optimizer_state
from models.balancing.result import BalanceResult
from models.balancing.scaling import param_scales
from models.balancing.sweeps import METHODS, ORDERS, full_balance, partial_balance
from models.balancing.tied import TIED_METHODS, tied_layer_balance

__all__ = [
    "ACTIVATION_TYPES", "METHODS", "ORDERS", "PASS_THROUGH", "TIED_METHODS", "ZERO_COST",
    "BalanceResult", "CostCache", "Slice", "UnitGroup", "chain_groups", "chain_groups_from_params",
    "ffn_groups", "full_balance", "max_log_imbalance", "neuron_costs",
    "param_scales", "partial_balance", "rescale_optimizer_state", "rnn_groups",
    "tied_layer_balance", "total_cost", "unit_groups",
]
