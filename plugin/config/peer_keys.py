"""Keys of Axolotl and LLaMA-Factory YAMLs that are not ours: which are ignored (with one notice), which are refused
(with the real reason), and which close-looking names must not be suggested for one another.

Kept apart from the schema: these tables describe other tools' files, not this package's keys.
"""

from __future__ import annotations

# cannot change what is trained: logging, caching, speed-only kernels, dataloader workers
IGNORED = {
    "wandb_project", "wandb_entity", "wandb_watch", "wandb_name", "wandb_log_model", "wandb_run_id", "mlflow_tracking_uri",
    "strict", "tf32", "dataset_prepared_path", "dataloader_num_workers", "dataloader_pin_memory",
    "dataloader_prefetch_factor", "plot_loss", "loss_watchdog_threshold", "loss_watchdog_patience", "ddp_timeout",
    "lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "liger_rope", "liger_rms_norm", "liger_glu_activation",
    "liger_layer_norm", "liger_fused_linear_cross_entropy", "cut_cross_entropy", "xformers_attention",
    "sdp_attention", "flash_attention", "flash_attn_cross_entropy", "flash_attn_rms_norm", "flash_attn_fuse_qkv",
    "flash_attn_fuse_mlp", "logging_dir", "overwrite_cache", "plugins", "save_safetensors", "ddp_find_unused_parameters", "auto_find_batch_size", "save_only_model",
    "use_tensorboard", "hub_strategy", "include_tokens_per_second",
    "eval_sample_packing", "model_type", "tokenizer_type", "save_first_step", "pad_to_sequence_len",
    "use_otel_metrics", "otel_metrics_host", "otel_metrics_port", "double_quantization", "low_cpu_mem_usage",
    "flex_attn_compile_kwargs", "use_sonicmoe", "fused_attn_kernel", "tokenized_path",
    "torch_compile", "torch_compile_mode", "use_wandb",
    "debug", "eval_table_size", "hf_use_auth_token", "push_dataset_to_hub", "remove_unused_columns",
    "flash_optimum", "torchdistx_path", "tokenizer_use_fast",
    "test_value",  # a marker in one Axolotl example that Axolotl itself never reads
    # reentrant or not, checkpointing computes the same gradients; we always use use_reentrant: false (true switched, with a note)
    "gradient_checkpointing_kwargs",
}
# reentrant checkpointing runs the forward under no_grad, where the adapters compute their auxiliary losses; the
# non-reentrant kind saves the same memory and gives the gradients of no checkpointing at all
REENTRANT_SWITCHED = ("note: gradient_checkpointing_kwargs: use_reentrant: true is run as use_reentrant: false: the "
                      "adapters' auxiliary losses are computed in the forward, which reentrant checkpointing runs "
                      "without gradients; the non-reentrant kind saves the same memory with the right gradients")
# belongs elsewhere or cannot be honoured: the way out is in the message
REFUSED = {
    "lora_model_dir": "continuing from a saved adapter is not supported here; resume an interrupted run with "
                      "resume_from_checkpoint: auto, or evaluate a saved adapter with python -m plugin.eval --adapter",
    "rl": "preference training (DPO, ORPO, KTO, ...) is not supported: plugin.train runs supervised fine-tuning",
    "image_max_pixels": "vision-language training is not supported: plugin.train trains causal language models",
    "processor_type": "vision-language training is not supported: plugin.train trains causal language models",
    "gptq": "pre-quantised GPTQ/AWQ bases are not supported: use a full-precision base with load_in_4bit: true",
    "peft": "LoftQ initialisation is not supported: our adapters start from their papers' initialisation",
    "relora": "ReLoRA restarts are not supported: train one adapter per run",
    "qat": "quantisation-aware training is not supported: use load_in_4bit: true for a 4-bit base",
    "diffusion": "diffusion language-model training is not supported: plugin.train trains causal language models",
    "pretraining_dataset": "streamed pre-training data is not supported: use datasets: with type: text",
    "unfrozen_parameters": "full fine-tuning of chosen parameters is not supported: adapters train, the base stays "
                           "frozen (lora_modules_to_save trains whole modules)",
    "lisa_n_layers": "LISA layer sampling is full fine-tuning: not supported, adapters train and the base stays frozen",
    "llmcompressor": "sparse fine-tuning (llmcompressor) is not supported: adapters train and the base stays frozen",
    "nvfp4_merge_aware": "NVFP4 merge-aware training is quantisation-aware training: not supported, use "
                         "load_in_4bit: true for a 4-bit base",
    "model_config": "changing the model's own config is not supported here; edit the base model's config.json",
}
# refused only when switched on: off (false, 0) they change nothing, as upstream files often leave them
REFUSED_WHEN_ON = {
    "cosine_constant_lr_ratio": "Axolotl's constant-then-cosine schedule is not supported: use lr_scheduler: "
                                "cosine (with warmup_ratio)",
    "sample_packing_sequentially": "packing rows in dataset order is not supported: TRL packs by best fit "
                                   "(sample_packing: true)",
    "lr_quadratic_warmup": "quadratic warmup is not supported: warmup here is linear (warmup_ratio or warmup_steps)",
    "fp8": "fp8 training is not supported: use bf16: true",
    "fp8_enable_fsdp_float8_all_gather": "fp8 training is not supported: use bf16: true",
    "float16": "a float16 model without mixed precision is not supported: use fp16: true (mixed precision)",
    "activation_offloading": "Axolotl's activation offloading: use gradient_checkpointing: offload, which "
                             "checkpoints with saved activations kept on the CPU",
    "use_ray": "Ray launching is not supported: launch with accelerate launch or torchrun",
    "ray_num_workers": "Ray launching is not supported: launch with accelerate launch or torchrun",
    "tokens": "adding new tokens is not supported: new embeddings would stay untrained (the base is frozen); use "
              "tokens the vocabulary has",
    "tokenizer_legacy": "the legacy (pre-fix) LLaMA tokenizer is not supported: the tokenizer loads as saved",
    "early_stopping_patience": "early stopping is not supported: set max_steps or num_epochs",
}
# pairs that string similarity would wrongly connect
NOT_HINTS = {("lora_model_dir", "loratrf_mode")}


def hint_allowed(key: str, suggestion: str) -> bool:
    return (key, suggestion) not in NOT_HINTS
