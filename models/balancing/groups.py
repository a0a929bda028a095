"""Model -> `UnitGroup`s: the balanceable hidden layers and the slices each neuron owns.

A stacked model (docs/STACKING.md) holds S members' parameters with a leading member dimension
(weights [S, out, in], biases [S, out]); its groups carry `members = S` and their slices' `dim`
counts that leading dimension. The algorithms work on a leading member dimension throughout:
`member_view` gives an unstacked parameter a size-1 one.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from models.activations import is_bilu

PASS_THROUGH = (nn.Flatten, nn.Dropout, nn.Identity)
ACTIVATION_TYPES = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Tanh, nn.Sigmoid, nn.ReLU6, nn.GELU,
                    nn.ELU, nn.SiLU, nn.Softplus, nn.Hardtanh, nn.Mish, nn.SELU, nn.CELU)


@dataclass(frozen=True, eq=False)
class Slice:
    param: nn.Parameter
    dim: int              # the dimension of `param` indexed by the group's neurons
    is_bias: bool = False


@dataclass(eq=False)
class UnitGroup:
    name: str
    size: int
    incoming: list[Slice]
    outgoing: list[Slice]
    recurrent: nn.Parameter | None = None   # square ([S, n, n] stacked); W[i, j]: from j to i
    members: int | None = None              # S when every parameter leads with a member dim

    @property
    def device(self) -> torch.device:
        """Where the group's parameters live: every tensor of its balancing is made there."""
        return self.incoming[0].param.device

    @property
    def stack_size(self) -> int:
        """The length of the leading member dimension of the algorithms (1 when unstacked)."""
        return 1 if self.members is None else self.members

    def params(self) -> list[nn.Parameter]:
        out = [s.param for s in self.incoming + self.outgoing]
        return out + ([self.recurrent] if self.recurrent is not None else [])


def member_view(group: UnitGroup, tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` (a parameter of `group`, or anything shaped like one) with a leading member
    dimension: itself when the group is stacked, a size-1 view otherwise."""
    return tensor if group.members is not None else tensor.unsqueeze(0)


def member_dim(group: UnitGroup, s: Slice) -> int:
    """The neuron dimension of `member_view(group, s.param)`."""
    return s.dim if group.members is not None else s.dim + 1


def check_groups(groups: list[UnitGroup]) -> int | None:
    """The groups' common `members` (None: unstacked); raises on inconsistent shapes."""
    counts = {g.members for g in groups}
    if len(counts) > 1:
        raise ValueError(f"unit groups mix members={sorted(counts, key=str)}; a model is either "
                         f"unstacked (None) or stacked with one member count S")
    members = counts.pop() if counts else None
    if members is not None and (not isinstance(members, int) or members < 1):
        raise ValueError(f"UnitGroup.members={members!r}: must be a positive int (S) or None")
    lead = 0 if members is None else 1
    for g in groups:
        slices = g.incoming + g.outgoing
        if g.recurrent is not None:
            slices += [Slice(g.recurrent, lead), Slice(g.recurrent, lead + 1)]
        for s in slices:
            shape = tuple(s.param.shape)
            if members is not None and (s.dim < 1 or not shape or shape[0] != members):
                raise ValueError(f"group {g.name}: a parameter of shape {shape} with neuron "
                                 f"dim {s.dim} does not lead with members={members}")
            if s.dim >= len(shape) or shape[s.dim] != g.size:
                raise ValueError(f"group {g.name}: a parameter of shape {shape} has no dim "
                                 f"{s.dim} of size {g.size} (the group's neurons)")
    return members


def check_activation(module: nn.Module, where: str, allow_non_homogeneous: bool) -> None:
    if is_bilu(module):
        return
    if not allow_non_homogeneous:
        raise ValueError(
            f"{where}: activation {type(module).__name__} is not positively homogeneous, so "
            f"balancing would change the network function; allowed: ReLU, LeakyReLU, Identity "
            f"(BiLU, NB §2). Pass allow_non_homogeneous=True for the authors' variant, which is "
            f"NOT function-preserving.")
    warnings.warn(f"{where}: balancing through {type(module).__name__} is not function-preserving",
                  stacklevel=3)


def chain_groups_from_params(weights: list[torch.Tensor], biases: list[torch.Tensor | None],
                             include_bias: bool, members: int | None = None) -> list[UnitGroup]:
    """Groups of a feed-forward chain W_0 -> act -> W_1 -> ... from its raw parameters: weights
    [out, in] and biases [out] (or None), or with `members=S` weights [S, out, in] and biases
    [S, out]. Hidden layer k is the outputs of W_k. Activations are checked by the caller."""
    if len(biases) != len(weights):
        raise ValueError(f"{len(weights)} weights but {len(biases)} biases: give one bias (or "
                         f"None) per weight")
    lead = 0 if members is None else 1
    expected = "[out, in]" if members is None else f"[S={members}, out, in]"
    for k, (w, b) in enumerate(zip(weights, biases)):
        if w.ndim != 2 + lead or (members is not None and w.shape[0] != members):
            hint = "; pass members=S for stacked weights" if members is None and w.ndim == 3 else ""
            raise ValueError(f"weight {k} has shape {tuple(w.shape)}; expected {expected}{hint}")
        if b is not None and b.shape != w.shape[:-1]:
            raise ValueError(f"bias {k} has shape {tuple(b.shape)}; expected "
                             f"{tuple(w.shape[:-1])} (weight {k}'s outputs)")
    groups = []
    for k, (w, b, nxt) in enumerate(zip(weights[:-1], biases[:-1], weights[1:])):
        if nxt.shape[-1] != w.shape[-2]:
            raise ValueError(f"weight {k + 1} has {nxt.shape[-1]} inputs, expected "
                             f"{w.shape[-2]} (the outputs of weight {k})")
        incoming = [Slice(w, lead)]
        if include_bias and b is not None:
            incoming.append(Slice(b, lead, is_bias=True))
        groups.append(UnitGroup(f"hidden{k}", w.shape[-2], incoming, [Slice(nxt, lead + 1)],
                                members=members))
    return groups


def chain_groups(linears: list[nn.Linear], include_bias: bool) -> list[UnitGroup]:
    """Groups of a feed-forward chain Linear -> act -> Linear -> ... (activations checked by caller)."""
    return chain_groups_from_params([lin.weight for lin in linears],
                                    [lin.bias for lin in linears], include_bias)


def _sequential_groups(model: nn.Sequential, include_bias, allow) -> list[UnitGroup]:
    linears = []
    for idx, m in enumerate(_flatten_sequential(model)):
        if isinstance(m, nn.Linear):
            linears.append(m)
        elif isinstance(m, PASS_THROUGH) and not isinstance(m, nn.Identity):
            continue
        elif isinstance(m, ACTIVATION_TYPES):
            if linears:   # an activation before the first Linear acts on the inputs: irrelevant
                check_activation(m, f"module {idx} of {type(model).__name__}", allow)
        else:
            raise TypeError(f"module {idx} of {type(model).__name__} is {type(m).__name__}; "
                            f"balancing supports Sequentials of Linear, BiLU activations, "
                            f"Flatten and Dropout")
    if len(linears) < 2:
        raise ValueError(f"{type(model).__name__} has {len(linears)} Linear layer(s): no hidden "
                         f"neurons to balance")
    return chain_groups(linears, include_bias)


def _flatten_sequential(model: nn.Sequential):
    for m in model:
        if isinstance(m, nn.Sequential):
            yield from _flatten_sequential(m)
        else:
            yield m


def rnn_groups(rnn: nn.RNN, readout: nn.Linear, include_bias: bool,
               allow_non_homogeneous: bool) -> list[UnitGroup]:
    """Groups of a stacked Elman RNN followed by a readout Linear (SPEC A.1, RNN)."""
    if rnn.bidirectional or getattr(rnn, "proj_size", 0):
        raise ValueError("balancing supports unidirectional nn.RNN without projection")
    if not isinstance(rnn, nn.RNN):
        raise ValueError(f"{type(rnn).__name__} is not an Elman RNN; the authors' LSTM "
                         f"'balancing' is outside the theory (SPEC A.2.5) and not offered")
    if rnn.nonlinearity != "relu":
        if not allow_non_homogeneous:
            raise ValueError(f"nn.RNN nonlinearity={rnn.nonlinearity!r} is not homogeneous; "
                             f"allowed: 'relu'. Pass allow_non_homogeneous=True for a "
                             f"NOT function-preserving variant")
        warnings.warn(f"balancing an RNN with nonlinearity={rnn.nonlinearity!r} is not "
                      f"function-preserving", stacklevel=3)
    groups = []
    for k in range(rnn.num_layers):
        w_ih, w_hh = getattr(rnn, f"weight_ih_l{k}"), getattr(rnn, f"weight_hh_l{k}")
        incoming = [Slice(w_ih, 0)]
        if include_bias and rnn.bias:
            incoming += [Slice(getattr(rnn, f"bias_ih_l{k}"), 0, True),
                         Slice(getattr(rnn, f"bias_hh_l{k}"), 0, True)]
        nxt = getattr(rnn, f"weight_ih_l{k + 1}") if k + 1 < rnn.num_layers else readout.weight
        groups.append(UnitGroup(f"rnn{k}", rnn.hidden_size, incoming, [Slice(nxt, 1)], w_hh))
    return groups


def ffn_groups(model: nn.Module, include_bias: bool, allow_non_homogeneous: bool) -> list[UnitGroup]:
    """One group per Transformer FFN: linear1 rows (+bias) in, linear2 columns out (NB App. A.6)."""
    groups = []
    for name, layer in model.named_modules():
        if not isinstance(layer, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
            continue
        act = layer.activation
        relu = act is torch.nn.functional.relu or (isinstance(act, nn.Module) and is_bilu(act))
        if not relu:
            label = getattr(act, "__name__", type(act).__name__)
            if not allow_non_homogeneous:
                raise ValueError(f"{name}: FFN activation {label} is not homogeneous; allowed: "
                                 f"relu. Pass allow_non_homogeneous=True for a NOT "
                                 f"function-preserving variant")
            warnings.warn(f"{name}: balancing through {label} is not function-preserving",
                          stacklevel=3)
        incoming = [Slice(layer.linear1.weight, 0)]
        if include_bias and layer.linear1.bias is not None:
            incoming.append(Slice(layer.linear1.bias, 0, True))
        groups.append(UnitGroup(f"{name}.ffn", layer.linear1.out_features, incoming,
                                [Slice(layer.linear2.weight, 1)]))
    return groups


def unit_groups(model: nn.Module, include_bias: bool = True,
                allow_non_homogeneous: bool = False) -> list[UnitGroup]:
    """The balanceable hidden layers of `model`; raises a clear error for unsupported models.

    A model that defines `unit_groups(include_bias, allow_non_homogeneous)` (DFANet, the ReLU RNN,
    the stacked models) describes itself and checks its own activations; an nn.Sequential of
    Linear and BiLU layers (FCN) and the FFNs of Transformer layers are found by their structure."""
    own = getattr(model, "unit_groups", None)
    if callable(own):
        groups = own(include_bias, allow_non_homogeneous=allow_non_homogeneous)
        if not groups:
            raise ValueError(f"{type(model).__name__}.unit_groups returned no groups: no hidden "
                             f"neurons to balance")
    elif isinstance(model, nn.Sequential):
        groups = _sequential_groups(model, include_bias, allow_non_homogeneous)
    else:
        groups = ffn_groups(model, include_bias, allow_non_homogeneous)
        if not groups:
            raise TypeError(f"balancing does not support {type(model).__name__}; supported: models "
                            f"with a unit_groups method (e.g. DFANet, ReLURNNClassifier), "
                            f"nn.Sequential of Linear/BiLU (e.g. FCN), models containing "
                            f"nn.TransformerEncoderLayer/DecoderLayer (FFN only)")
    check_groups(groups)
    return groups
