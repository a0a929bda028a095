"""Model -> `UnitGroup`s: the balanceable hidden layers and the slices each neuron owns."""
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
    dim: int              # the dimension indexed by the group's neurons
    is_bias: bool = False


@dataclass(eq=False)
class UnitGroup:
    name: str
    size: int
    incoming: list[Slice]
    outgoing: list[Slice]
    recurrent: nn.Parameter | None = None   # square; W[i, j] is the weight from j to i

    @property
    def device(self) -> torch.device:
        """Where the group's parameters live: every tensor of its balancing is made there."""
        return self.incoming[0].param.device


def _check_activation(module: nn.Module, where: str, allow_non_homogeneous: bool) -> None:
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


def chain_groups(linears: list[nn.Linear], include_bias: bool) -> list[UnitGroup]:
    """Groups of a feed-forward chain Linear -> act -> Linear -> ... (activations checked by caller)."""
    groups = []
    for k, (lin, nxt) in enumerate(zip(linears[:-1], linears[1:])):
        if nxt.in_features != lin.out_features:
            raise ValueError(f"Linear {k + 1} has in_features={nxt.in_features}, expected "
                             f"{lin.out_features} (out_features of Linear {k})")
        incoming = [Slice(lin.weight, 0)]
        if include_bias and lin.bias is not None:
            incoming.append(Slice(lin.bias, 0, is_bias=True))
        groups.append(UnitGroup(f"hidden{k}", lin.out_features, incoming, [Slice(nxt.weight, 1)]))
    return groups


def _sequential_groups(model: nn.Sequential, include_bias, allow) -> list[UnitGroup]:
    linears = []
    for idx, m in enumerate(_flatten_sequential(model)):
        if isinstance(m, nn.Linear):
            linears.append(m)
        elif isinstance(m, PASS_THROUGH) and not isinstance(m, nn.Identity):
            continue
        elif isinstance(m, ACTIVATION_TYPES):
            if linears:   # an activation before the first Linear acts on the inputs: irrelevant
                _check_activation(m, f"module {idx} of {type(model).__name__}", allow)
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
    """The balanceable hidden layers of `model`; raises a clear error for unsupported models."""
    from models.dfa import DFANet
    from models.rnn import ReLURNNClassifier

    if isinstance(model, ReLURNNClassifier):
        return rnn_groups(model.rnn, model.readout, include_bias, allow_non_homogeneous)
    if isinstance(model, DFANet):
        for k, act in enumerate(model.activations):
            _check_activation(act, f"DFANet hidden layer {k}", allow_non_homogeneous)
        return chain_groups(list(model.linears), include_bias)
    if isinstance(model, nn.Sequential):
        return _sequential_groups(model, include_bias, allow_non_homogeneous)
    groups = ffn_groups(model, include_bias, allow_non_homogeneous)
    if groups:
        return groups
    raise TypeError(f"balancing does not support {type(model).__name__}; supported: nn.Sequential "
                    f"of Linear/BiLU (e.g. FCN), ReLURNNClassifier, DFANet, models containing "
                    f"nn.TransformerEncoderLayer/DecoderLayer (FFN only)")
