"""Export a transformers encoder or pair model to ONNX, fuse it for ONNX Runtime, quantise it to int8.

Everything here works on any BERT-like transformers model the settings name (the packaged MiniLM,
the stance delta artifact rebuilt on it, a full Hugging Face model directory), not only the
defaults:

- :func:`export_model`: ``torch.onnx.export`` (the TorchScript exporter; ``optimum`` conflicts with
  transformers 5) of the model's forward pass on the inputs its tokenizer produces, with dynamic
  batch and sequence axes. Attention is exported in its eager form, which ONNX Runtime's fusions
  recognise (the SDPA form is not fused).
- :func:`fuse_model`: ONNX Runtime's transformer optimiser (``EmbedLayerNormalization``,
  ``Attention``, ``SkipLayerNormalization``, ``BiasGelu``) for BERT-family models; other
  architectures keep the exported graph, which ONNX Runtime still optimises when it loads it.
- :func:`quantize_model`: dynamic int8 (weights int8 per output channel, activations quantised per
  batch at run time) of the ``MatMul``/``Attention`` nodes, except those named in ``exclude``.

:mod:`models.runtime` decides when to call these, caches the files and checks them against torch.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from newsflow.errors import ModelError

log = logging.getLogger(__name__)

#: Bumped whenever the export, the fusions or the quantisation recipe change: part of every cache key.
EXPORT_VERSION = "1"
OPSET = 17
INPUT_ORDER = ("input_ids", "attention_mask", "token_type_ids")
#: ``config.model_type`` values whose graphs ONNX Runtime's ``bert`` fusions understand.
BERT_FAMILY = frozenset({"bert", "roberta", "xlm-roberta", "camembert", "mpnet", "electra", "ernie"})


class _Forward(torch.nn.Module):
    """The model's forward pass with positional inputs and one output tensor (for the exporter)."""

    def __init__(self, model: Any, names: Sequence[str], output: str) -> None:
        super().__init__()
        self.model = model
        self.names = tuple(names)
        self.output = output

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = self.model(**dict(zip(self.names, inputs, strict=True)))
        return out.last_hidden_state if self.output == "last_hidden_state" else out.logits


def input_names(tokenizer: Any) -> list[str]:
    """The inputs the model takes, in a fixed order: what the tokenizer produces."""
    produced = tokenizer(["a b"], return_tensors="pt")
    return [name for name in INPUT_ORDER if name in produced]


def export_model(model: Any, tokenizer: Any, output: str, path: Path) -> None:
    """Write ``model``'s forward pass as ONNX to ``path``.

    Args:
        model: A transformers model (fp32, eval mode); it is not modified (a copy is exported).
        tokenizer: Its tokenizer: the graph takes the inputs it produces.
        output: ``"last_hidden_state"`` (an encoder) or ``"logits"`` (a sequence classifier).
        path: Where to write the ``.onnx`` file (weights inside it).

    Raises:
        ModelError: The exporter failed on this architecture.
    """
    names = input_names(tokenizer)
    sample = tokenizer(
        ["a short sentence", "a somewhat longer sentence for the exporter"],
        padding=True,
        return_tensors="pt",
    )
    clone = copy.deepcopy(model).float().eval()
    if hasattr(clone, "set_attn_implementation"):
        try:
            clone.set_attn_implementation("eager")  # the form ONNX Runtime's Attention fusion matches
        except (ValueError, NotImplementedError) as exc:
            log.debug("keeping the model's attention implementation: %s", exc)
    wrapper = _Forward(clone, names, output).eval()
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes[output] = {0: "batch", 1: "sequence"} if output == "last_hidden_state" else {0: "batch"}
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python branches
            torch.onnx.export(
                wrapper,
                tuple(sample[name] for name in names),
                str(path),
                input_names=names,
                output_names=[output],
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )
    except Exception as exc:  # the exporter raises many error types, all fatal for this model
        raise ModelError(
            f"could not export {type(model).__name__} to ONNX: {str(exc).splitlines()[0]}; "
            "set NEWSFLOW_MODELS_RUNTIME=torch"
        ) from exc


def fuse_model(source: Path, target: Path, config: Any) -> dict[str, int]:
    """ONNX Runtime's transformer fusions for BERT-family models; the fused operator counts.

    Other architectures are copied unfused (ONNX Runtime applies its generic optimisations at load).
    """
    model_type = str(getattr(config, "model_type", ""))
    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    if model_type not in BERT_FAMILY or not heads or not hidden:
        log.info("no transformer fusions for model type %r: using the exported graph", model_type)
        target.write_bytes(source.read_bytes())
        return {}
    from onnxruntime.transformers import optimizer

    logging.getLogger("onnxruntime.transformers").setLevel(logging.WARNING)
    fused = optimizer.optimize_model(
        str(source), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0
    )
    fused.save_model_to_file(str(target))
    stats = {op: int(n) for op, n in fused.get_fused_operator_statistics().items() if n}
    log.debug("fused %s: %s", source.name, stats)
    return stats


def quantize_model(source: Path, target: Path, exclude: Sequence[str] = ()) -> None:
    """Dynamic int8: int8 weights per output channel for ``MatMul`` and ``Attention`` nodes.

    Args:
        source: The fused fp32 graph.
        target: Where to write the quantised graph.
        exclude: Node names to keep in fp32 (layers whose quantisation hurts quality).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger("root").setLevel(logging.ERROR)  # the quantiser warns about pre-processing
    quantize_dynamic(
        str(source),
        str(target),
        per_channel=True,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Attention"],
        nodes_to_exclude=list(exclude),
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True},
    )


def matmul_nodes(path: Path) -> list[str]:
    """Names of the ``MatMul`` and ``Attention`` nodes of a graph (candidates for ``exclude``)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [node.name for node in graph.node if node.op_type in ("MatMul", "Attention")]
