"""int8 dynamic quantization of a fitted neural model, for CPU inference (``quantize``).

Dynamic quantization keeps the weights of Linear layers and GRU cells as int8 and quantizes their
inputs on the fly, call by call: no calibration data, no retraining. Embeddings, the tied item
table that scores the catalogue, and attention's output projection stay float32 (torch's dynamic
quantization does not cover them). The quantized copy is for inference on the CPU: fitting or
saving it is refused; save the float model and quantize after ``load_model``. torch 2.13 warns
that ``torch.ao.quantization`` is deprecated for torchao's ``quantize_``; this module uses it while
it is there, as torchao is not a dependency.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from journeymap.exceptions import JourneymapError
from journeymap.models._base import SequenceModel
from journeymap.models._gru4rec import GRU4Rec
from journeymap.models._multitask import BehaviourModel
from journeymap.models._sasrec import SASRec

# Where each neural model keeps its network: the attribute that caches it, and the method that
# returns it (rebuilding it from the stored weights on first use after ``load``).
_NETWORKS: tuple[tuple[type[SequenceModel], str, str], ...] = (
    (GRU4Rec, "_net", "_network"),
    (SASRec, "_net", "_network"),
    (BehaviourModel, "_net_cache", "_net"),
)


def quantize(model: SequenceModel) -> SequenceModel:
    """A copy of a fitted gru4rec, sasrec or behaviour model whose Linear layers and GRU cells are
    int8 (torch dynamic quantization), scoring on the CPU; ``model`` itself is left as it was.

    Scoring (``score_items``, ``predict_next``, ``recommend``, ``predict_user``) works as before.
    ``quantized_`` names the layers made int8. Check accuracy on held-out cases before serving it
    (``benchmarks/inference.py`` does on YooChoose).
    """
    where = next(((attr, build) for cls, attr, build in _NETWORKS if isinstance(model, cls)), None)
    if where is None:
        raise JourneymapError(f"quantize() makes the torch network of a neural model (gru4rec, sasrec, behaviour) "
                              f"int8; a {type(model).__name__} model ('{model.name}') scores from counts and has no "
                              "network to quantize.")
    if isinstance(model, _Quantized):
        raise JourneymapError(f"This {model._float_class.__name__} model is quantized already.")
    model._check_fitted()
    import torch
    from torch import nn
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError:
        raise JourneymapError(f"This torch ({torch.__version__}) has no torch.ao.quantization, which quantize() "
                              "uses; serve the float model, or a torch that still has it.") from None
    if torch.backends.quantized.engine == "none":
        raise JourneymapError("This torch build has no quantized CPU engine (fbgemm, x86 or qnnpack), so quantize() "
                              "cannot run here; serve the float model.")
    attr, build = where
    quantized = copy.deepcopy(model)
    net = getattr(quantized, build)().to("cpu").eval()  # the float network, rebuilt from weights_ after load
    before = {name for name, m in net.named_modules() if type(m) in (nn.Linear, nn.GRUCell)}
    quantize_dynamic(net, {nn.Linear, nn.GRUCell}, dtype=torch.qint8, inplace=True)
    for layer in net.modules():
        if isinstance(layer, nn.TransformerEncoderLayer):
            # Off the fused fast path, which reads linear1.weight as a float tensor; int8 layers hold
            # packed weights. The flag is read by that path alone (the layer's own activation stays).
            layer.activation_relu_or_gelu = 0
    setattr(quantized, attr, net)
    quantized.device = "cpu"  # int8 kernels are CPU kernels
    quantized.quantized_ = tuple(sorted(name for name, m in net.named_modules()
                                        if name in before and type(m) not in (nn.Linear, nn.GRUCell)))
    quantized.__class__ = _quantized_class(type(model))
    return quantized


class _Quantized:
    """Mixed into a quantized copy's class: inference only, never saved."""

    _float_class: type[SequenceModel]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Not passed on to SequenceModel's registry: no checkpoint can name a quantized class.
        pass

    def save(self, path: Any) -> Any:
        raise JourneymapError(f"This {self._float_class.__name__} model is int8-quantized, and a checkpoint holds "
                              "float weights, so it is not saved; save the float model and quantize it again after "
                              "load_model(path).")

    def _check_params(self) -> None:  # every fit, pretrain and finetune starts here
        raise JourneymapError(f"This {self._float_class.__name__} model is int8-quantized for inference and does not "
                              "learn; fit the float model, then quantize it again.")


@functools.cache
def _quantized_class(cls: type[SequenceModel]) -> type[SequenceModel]:
    return type(f"Quantized{cls.__name__}", (_Quantized, cls),
                {"_float_class": cls, "__doc__": f"An int8-quantized {cls.__name__}, for inference on the CPU."})
