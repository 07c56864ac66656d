"""Keys of Axolotl and LLaMA-Factory YAMLs (and the HF TrainingArguments both accept) that are not ours: which are
ignored (with one notice), refused (with the real reason), translated onto one of ours, or handed to the Trainer as
they are; and which close-looking names must not be suggested for one another. tests/config/test_peer_schemas.py
walks Axolotl's schema and LLaMA-Factory's argument dataclasses against these tables.

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
    "gradient_checkpointing_kwargs", "use_reentrant_gc",
    # logging, profiling and experiment trackers
    *"""comet_api_key comet_experiment_config comet_experiment_key comet_mode comet_online comet_project_name
    comet_workspace use_comet hf_mlflow_log_artifacts mlflow_experiment_name mlflow_run_name use_mlflow
    trackio_project_name trackio_run_name use_trackio wandb_mode include_tkps profiler_steps profiler_steps_start
    swanlab_api_key swanlab_lark_secret swanlab_lark_webhook_url swanlab_logdir swanlab_mode swanlab_project
    swanlab_run_name swanlab_workspace use_swanlab print_param_status include_effective_tokens_per_second
    profiler_active_steps profiler_output_dir profiler_profile_memory profiler_record_shapes profiler_repeat
    profiler_wait_steps profiler_warmup_steps profiler_with_stack enable_torch_profiler profile_modules
    total_num_tokens total_supervised_tokens num_dataset_shards_to_save""".split(),
    # speed- or memory-only kernels and placement: the same loss and gradients
    *"""chunked_cross_entropy chunked_cross_entropy_num_chunks experts_implementation flash_attn_d512
    gemma4_hybrid_attn_impl sdpa_varlen lora_embedding_kernel use_kernels tiled_mlp tiled_mlp_num_shards
    tiled_mlp_use_original_mlp dynamic_checkpoint selective_checkpointing layer_offloading ple_cpu_offload
    lora_on_cpu device_map max_memory gpu_memory_limit offload_folder gc_collect_steps gc_steps
    experimental_skip_move_to_device qlora_sharded_model_loading enable_liger_kernel use_v1_kernels use_liger_kernel
    liger_kernel_config torch_compile_backend torch_compile_options activation_checkpointing_kwargs compute_dtype
    quantization_device_map pad_to_multiple_of ddp device local_rank world_size master_addr master_port use_cache
    is_preprocess preprocess_iterable skip_prepare_dataset dataset_keep_in_memory cache_dir download_mode
    data_shared_file_system preprocessing_batch_size buffer_size streaming_multipack_buffer_size
    sample_packing_bin_size sample_packing_eff_est sample_packing_group_size sample_packing_mp_start_method
    shuffle_before_merging_datasets shuffle_merged_datasets use_fast_tokenizer tokenizer_save_jinja_files
    axolotl_config_path fsdp_final_state_dict_type merge_method""".split(),
    # model-family hints older Axolotl files carry: the model's own config says what it is
    "is_falcon_derived_model", "is_llama_derived_model", "is_mistral_derived_model", "is_qwen_derived_model",
    # generation settings for sampling during training, chat and serving: plugin.chat / plugin.serve take them
    *"""eval_max_new_tokens generate_samples generation_do_sample generation_max_new_tokens generation_prompt_ratio
    generation_temperature generation_top_k generation_top_p num_generation_samples gradio_max_new_tokens
    gradio_server_name gradio_server_port gradio_share gradio_temperature gradio_title do_sample temperature top_k
    top_p num_beams max_new_tokens repetition_penalty length_penalty skip_special_tokens eval_num_beams
    infer_backend infer_dtype vllm_config vllm_enforce_eager vllm_gpu_util vllm_max_lora_rank vllm_maxlen
    sglang_config sglang_lora_backend sglang_maxlen sglang_mem_fraction sglang_tp_size use_kv_cache
    generation_config generation_max_length generation_num_beams predict_with_generate""".split(),
    # the Trainer's metric plumbing: the held-out loss (and plugin.eval's metrics) are computed here
    *"""batch_eval_metrics include_for_metrics label_names length_column_name prediction_loss_only
    eval_do_concat_batches eval_use_gather_object compute_accuracy do_eval hub_always_push""".split(),
    # PEFT details set from the layers: fan_in_fan_out from the layer type (Conv1D), adapter dtype and weight tying
    "lora_fan_in_fan_out", "peft_autocast_adapter_dtype", "peft_ensure_weight_tying",
    # text-only training: a vision tower and projector are never trained
    "freeze_vision_tower", "freeze_multi_modal_projector",
    # LLaMA-Factory always ignores padding in the loss; so does every loss here
    "ignore_pad_token_for_loss",
}
# reentrant checkpointing runs the forward under no_grad, where the adapters compute their auxiliary losses; the
# non-reentrant kind saves the same memory and gives the gradients of no checkpointing at all
REENTRANT_SWITCHED = ("note: gradient_checkpointing_kwargs: use_reentrant: true is run as use_reentrant: false: the "
                      "adapters' auxiliary losses are computed in the forward, which reentrant checkpointing runs "
                      "without gradients; the non-reentrant kind saves the same memory with the right gradients")
# belongs elsewhere or cannot be honoured: the way out is in the message
REFUSED = {
    "adapter_folder": "merging a folder of adapters is not supported: python -m plugin.export RUN --merge merges one",
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
def _each(reason: str, keys: str) -> dict[str, str]:
    return dict.fromkeys(keys.split(), reason)


_PREFERENCE = "this preference / reward option is not supported: rl: dpo, ipo, kto, orpo, simpo and grpo run with " \
              "the preference keys of docs/configuration.md (PPO, reward-model stages and separate reference models " \
              "do not)"
# Axolotl's vllm: section, trl.use_vllm and trl.vllm_*: TRL's generation on a vLLM server during training
VLLM_GENERATION = "generating with a vLLM server during training is not supported: TRL sends it the adapter merged " \
                  "into the base weights, which MoR and LoRATRF cannot be (their update depends on the input); drop " \
                  "the vllm: section and trl.use_vllm: GRPO then samples inside the trainer through the adapters' " \
                  "inference path (to serve on vLLM after training: python -m plugin.serve RUN --engine vllm)"
_VISION = "vision, audio and video training is not supported: plugin.train trains language models on text"
_PARALLEL = "tensor, context and sequence parallelism are not supported: data parallelism, FSDP and DeepSpeed ZeRO " \
            "run here (docs/distributed.md)"
_FULL_OPTIMIZER = "full-parameter optimizers and per-group learning rates (GaLore, APOLLO, BAdam, Adam-mini, Muon, " \
                  "Dion, LoRA+, embedding_lr, ...) are not supported: the adapters train with optimizer:"
_QUANT = "this quantisation is not supported: use load_in_4bit: true (nf4, double quantisation) or load_in_8bit: true"
_TOKENS = "changing the vocabulary is not supported: new or resized embeddings would stay untrained (the base is " \
          "frozen); use tokens the vocabulary has"
_EXPORT = "exporting is a separate command: python -m plugin.export RUN --merge (or --as-lora)"
_LOSS = "other training losses (ASFT, DFT, EAFT, distillation, ...) are not supported: plugin.train minimises " \
        "cross-entropy on the trained tokens"
_OTHER_ADAPTER = "this adapter kind (DoRA, OFT, LLaMA Pro, freeze tuning, ...) is not supported: adapter: lora, " \
                 "mplora, mor or loratrf"
_BENCH = "benchmark scoring during training is not supported: score the adapter with python -m plugin.lm_eval, or " \
         "add an eval: section (run after training)"
_TEMPLATE = "this chat-rendering option is not supported: chats render through the chat template as written (set " \
            "chat_template, or put the system turn in the data)"
_MODEL_CHANGE = "changing the base model's architecture or numerics is not supported: the base loads as saved"
_DATA_SUBSET = "taking part of the data this way is not supported: use max_samples (per dataset or for all)"
_HUB_SECRET = "a hub token in the YAML is not supported: set HF_TOKEN in the environment or run `hf auth login`"

# refused only when switched on: off (false, 0, empty) they change nothing, as upstream files often leave them
REFUSED_WHEN_ON = {
    **_each(_PREFERENCE, "center_rewards_coefficient dpo_beta dpo_generate_during_eval dpo_loss_type "
                         "dpo_loss_weights dpo_norm_loss dpo_padding_free dpo_use_liger_kernel dpo_use_logits_to_keep "
                         "dpo_use_weighting precompute_ref_log_probs process_reward_model "
                         "max_prompt_len ebft ppo_buffer_size ppo_epochs ppo_score_norm ppo_target "
                         "ppo_whiten_rewards pref_bco_weight ref_model ref_model_adapters ref_model_quantization_bit "
                         "reward_model_adapters reward_model_quantization_bit reward_model_type ld_alpha"),
    "vllm": VLLM_GENERATION,
    **_each(_VISION, "image_size image_resize_algorithm processor_kwargs freeze_mm_modules audio_sampling_rate "
                     "crop_to_patches image_do_pan_and_scan image_min_pixels media_dir use_audio_in_video video_fps "
                     "video_max_pixels video_maxlen video_min_pixels freeze_language_model"),
    **_each(_PARALLEL, "context_parallel_size dp_replicate_size dp_shard_size heads_k_stride ring_attn_func "
                       "sequence_parallel_degree tensor_parallel_size deepcompile parallelism_config "
                       "use_hyper_parallel hyper_parallel_args use_mca use_kt kt_expert_checkpoint_path "
                       "kt_lora_expert_intermediate_size kt_lora_expert_num kt_use_lora_experts kt_weight_path"),
    **_each(_FULL_OPTIMIZER, "qgalore_cos_threshold qgalore_gamma_proj qgalore_proj_bits qgalore_proj_group_size "
                             "qgalore_proj_quant qgalore_proj_type qgalore_queue_size qgalore_rank qgalore_scale "
                             "qgalore_update_proj_gap dion_lr dion_momentum dion_rank_fraction dion_rank_multiple_of "
                             "apollo_layerwise apollo_proj apollo_proj_type apollo_rank apollo_scale "
                             "apollo_scale_front apollo_scale_type apollo_target apollo_update_interval use_apollo "
                             "badam_mask_mode badam_mode badam_start_block badam_switch_interval badam_switch_mode "
                             "badam_update_ratio badam_verbose use_badam galore_layerwise galore_proj_type "
                             "galore_rank galore_scale galore_target galore_update_interval use_galore use_adam_mini "
                             "use_muon optim_target_modules embedding_lr embedding_lr_scale lr_groups "
                             "loraplus_lr_ratio loraplus_lr_embedding adam_beta3 adam_epsilon2"),
    **_each(_QUANT, "model_quantization_config model_quantization_config_kwargs quantization quantize_moe_experts "
                    "bnb_config_kwargs use_onebitllms"),
    **_each(_TOKENS, "added_tokens_overrides mean_resizing_embeddings resize_token_embeddings_to_32x "
                     "shrink_embeddings fix_untrained_tokens add_tokens add_special_tokens new_special_tokens_config "
                     "init_special_tokens resize_vocab"),
    **_each(_EXPORT, "export_device export_dir export_hub_model_id export_legacy_format export_size "
                     "export_quantization_bit export_quantization_dataset export_quantization_maxlen "
                     "export_quantization_nsamples merge_lora"),
    **_each(_LOSS, "asft_alpha use_asft_loss use_dft_loss use_eaft_loss eaft_alpha eaft_k use_eaft"),
    **_each(_OTHER_ADAPTER, "peft_use_dora use_dora oft_block_size oft_rank oft_target module_dropout use_llama_pro "
                            "freeze_trainable_layers freeze_trainable_modules freeze_extra_modules create_new_adapter "
                            "peft_layer_replication peft_trainable_token_indices peft_layers_to_transform "
                            "peft_layers_pattern"),
    **_each(_BENCH, "bench_dataset bench_split do_bench_eval do_causal_lm_eval eval_causal_lm_metrics do_predict"),
    **_each(_TEMPLATE, "default_system_message default_system chat_template_kwargs role_boundaries tool_format "
                       "mask_history preserve_thinking"),
    **_each(_MODEL_CHANGE, "bfloat16 float32 fp32_norms fp32_norm_classes embeddings_skip_upcast rope_scaling "
                           "scaling_softmax scaling_softmax_bias scaling_softmax_factor s2_attention shift_attn "
                           "llama4_linearized_experts mixture_of_depths moe_aux_loss_coef upcast_layernorm "
                           "upcast_lmhead_output train_from_scratch reinit_weights model_kwargs cls_model_config "
                           "tokenizer_use_mistral_common split_special_tokens use_unsloth use_unsloth_gc pure_bf16"),
    **_each(_DATA_SUBSET, "dataset_shard_idx dataset_shard_num min_sample_len"),
    **_each(_HUB_SECRET, "hf_hub_token ms_hub_token om_hub_token hub_token"),
    **_each("pushing to a hub branch is not supported: the adapter is pushed to the repo's main branch",
            "hub_revision"),
    **_each("Ray launching is not supported: launch with accelerate launch or torchrun",
            "use_ray ray_num_workers ray_run_name resources_per_worker ray_init_kwargs"),
    **_each("fp8 training is not supported: use bf16: true", "fp8 fp8_enable_fsdp_float8_all_gather fp8_config "
                                                             "fp8_backend"),
    **_each("streamed data is not supported: datasets are read whole", "streaming"),
    **_each("PoSE context extension is not supported", "use_pose pose_max_context_len pose_num_chunks "
                                                       "pose_split_on_token_ids"),
    **_each("LISA layer sampling is full fine-tuning: not supported, adapters train and the base stays frozen",
            "lisa_layers_attribute lisa_step_interval"),
    **_each("ReLoRA restarts are not supported: train one adapter per run",
            "relora_cpu_offload relora_prune_method relora_prune_ratio jagged_restart_steps "
            "jagged_restart_warmup_steps jagged_restart_anneal_steps"),
    **_each("packing variants are not supported: TRL packs rows by best fit (sample_packing: true)",
            "batch_flattening multipack_real_batches max_packed_sequence_len neat_packing block_diag_attn "
            "pretraining_sample_concatenation pretrain_multipack_attn pretrain_multipack_buffer_size "
            "sortish_sampler"),
    **_each("held-out data is test_datasets: (or val_set_size) here", "eval_dataset eval_on_each_dataset"),
    **_each("a separate held-out sequence length is not supported: held-out rows use sequence_len",
            "eval_sequence_len"),
    **_each("choosing the Trainer class is not supported: plugin.train runs its own (TRL's SFTTrainer underneath)",
            "trainer_cls"),
    **_each("loading another revision is not supported: download it (hf download REPO --revision R --local-dir DIR) "
            "and set base_model: DIR", "model_revision"),
    **_each("a total batch size is not supported: set micro_batch_size and gradient_accumulation_steps",
            "batch_size"),
    **_each("an ambiguous length: use sequence_len for training rows, plugin.chat --max_new_tokens for replies",
            "max_length model_max_length"),
    **_each("Axolotl's one-cycle schedule is not supported: choose lr_scheduler (e.g. cosine with warmup_ratio)",
            "lr_div_factor"),
    **_each("training on the CPU is chosen by the machine: hide the GPUs (CUDA_VISIBLE_DEVICES=) to train on the CPU",
            "use_cpu"),
    **_each("mixing datasets by probability is not supported: datasets are concatenated",
            "interleave_probs"),
    **_each("an attention kernel that changes the numbers is not supported: set attn_implementation (eager, sdpa, "
            "flash_attention_2)", "sage_attention large_head_attention"),
    **_each("LLaMA-Factory's evaluation command: score the adapter with python -m plugin.lm_eval",
            "lang n_shot save_dir task_dir"),
    **_each("thinking-mode rendering is not supported: chats render through the chat template as written",
            "enable_thinking split_thinking"),
    "cosine_constant_lr_ratio": "Axolotl's constant-then-cosine schedule is not supported: use lr_scheduler: "
                                "cosine (with warmup_ratio)",
    "sample_packing_sequentially": "packing rows in dataset order is not supported: TRL packs by best fit "
                                   "(sample_packing: true)",
    "lr_quadratic_warmup": "quadratic warmup is not supported: warmup here is linear (warmup_ratio or warmup_steps)",
    "float16": "a float16 model without mixed precision is not supported: use fp16: true (mixed precision)",
    "activation_offloading": "Axolotl's activation offloading: use gradient_checkpointing: offload, which "
                             "checkpoints with saved activations kept on the CPU",
    "activation_checkpointing": "use gradient_checkpointing: true (non-reentrant, which keeps the adapters' "
                                "auxiliary losses right)",
    "tokens": _TOKENS,
    "tokenizer_legacy": "the legacy (pre-fix) LLaMA tokenizer is not supported: the tokenizer loads as saved",
    "early_stopping_patience": "early stopping is not supported: set max_steps or num_epochs",
    "early_stopping_steps": "early stopping is not supported: set max_steps or num_epochs",
}
# sizes and degrees: 1 is as off as 0
OFF_VALUES = {"context_parallel_size": 1, "dp_replicate_size": 1, "dp_shard_size": 1, "tensor_parallel_size": 1,
              "sequence_parallel_degree": 1, "heads_k_stride": 1, "dataset_shard_num": 1}


def is_on(key: str, value) -> bool:
    """Whether a refused-when-on key is switched on (its off values change nothing)."""
    return bool(value) and value != OFF_VALUES.get(key)


# Other tools' spellings whose values map onto one of our keys: key -> (our key, {their value: ours}); DROP = the
# value is what happens here anyway
DROP = object()
TRANSLATED = {
    "attention": ("attn_implementation", {"flash": "flash_attention_2", "sdpa": "sdpa", "eager": "eager",
                                          "flex": "flex_attention"}),
    "flash_attn": ("attn_implementation", {"auto": DROP, "disabled": "eager", "sdpa": "sdpa",
                                           "fa2": "flash_attention_2", "fa3": "flash_attention_3"}),
    "eager_attention": ("attn_implementation", {True: "eager", False: DROP}),
    "flex_attention": ("attn_implementation", {True: "flex_attention", False: DROP}),
    "disable_gradient_checkpointing": ("gradient_checkpointing", {True: False, False: DROP}),
    "reward_model": ("rl", {True: "rm", False: DROP}),  # Axolotl: train a reward model
    "auto_resume_from_checkpoints": ("resume_from_checkpoint", {True: "auto", False: DROP}),
    "quantization_method": ("load_in_4bit", {"bnb": DROP, "bitsandbytes": DROP}),
    "quantization_type": ("load_in_4bit", {"nf4": DROP}),
    "mix_strategy": ("datasets", {"concat": DROP}),
}

# fields of transformers' TrainingArguments that Axolotl and LLaMA-Factory hand to the HF Trainer as they are: so do
# we (into trainer_args), with transformers' own meaning
TRAINER_KEYS = set("""
accelerator_config average_tokens_across_devices data_seed dataloader_drop_last dataloader_persistent_workers
dataloader_in_order dataloader_multiprocessing_context ddp_backend ddp_broadcast_buffers ddp_bucket_cap_mb
ddp_static_graph eval_accumulation_steps eval_delay eval_on_start full_determinism greater_is_better
ignore_data_skip label_smoothing_factor load_best_model_at_end metric_for_best_model log_level log_level_replica
log_on_each_node logging_first_step logging_nan_inf_filter logging_strategy lr_scheduler_kwargs neftune_noise_alpha
optim_args restore_callback_states_from_checkpoint run_name save_on_each_node save_strategy skip_memory_metrics
torch_empty_cache_steps disable_tqdm include_num_input_tokens_seen project trackio_space_id trackio_bucket_id
trackio_static_space_id bf16_full_eval fp16_full_eval train_sampling_strategy enable_jit_checkpoint
""".split())

# Axolotl's fsdp_config keys that the HF Trainer spells otherwise or does not read (Axolotl hands them to accelerate
# through environment variables; plugin.train hands fsdp_config to the Trainer)
FSDP_RENAMED = {"offload_params": "cpu_offload"}  # accelerate's FSDP_OFFLOAD_PARAMS: the Trainer's cpu_offload
FSDP_IGNORED = {"final_state_dict_type": "the adapter is saved as PEFT files whatever the state dict type"}
FSDP_REFUSED = {
    "cpu_offload_pin_memory": "unpinned offload memory is not available through the HF Trainer; drop it",
    "mixed_precision_policy": "a custom FSDP2 mixed-precision policy is not supported: bf16 / fp16 set precision",
}

# keys of an Axolotl datasets: entry
DATASET_IGNORED = {
    "ds_type": "the file format is read from the path's extension",
    "preprocess_shards": "rows are prepared whole (speed only)",
}
DATASET_REFUSED_WHEN_ON = {
    **_each("a chat template per dataset is not supported: set chat_template at the top level",
            "chat_template chat_template_jinja conversation"),
    **_each("name the columns with message_property_mappings: {role: COLUMN, content: COLUMN} (and roles:)",
            "field_human field_model message_field_role message_field_content"),
    **_each("thinking-mode rendering is not supported: chats render through the chat template as written",
            "field_thinking template_thinking_key split_thinking"),
    **_each("custom prompt formats are not supported: type: messages, sharegpt, alpaca, text or completion",
            "input_format input_transform"),
    **_each("distillation from a teacher's log-probabilities is not supported", "logprobs_field temperature"),
    **_each("per-message training flags are not supported: roles_to_train chooses the trained turns",
            "message_field_training message_field_training_detail"),
    **_each(_DATA_SUBSET, "shards shards_idx"),
    "data_files": "set path: to the file (one datasets entry per file)",
    "field_tools": "tool definitions are not rendered into the prompt here",
    "revision": "a dataset revision is not supported: download it (hf download REPO --repo-type dataset --revision R "
                "--local-dir DIR) and set path: DIR",
    "train_on_eot": "use train_on_eos (the end-of-turn tokens are trained with the turns roles_to_train chooses)",
    "trust_remote_code": "running a dataset's own loading script is not supported",
}
# pairs that string similarity would wrongly connect
NOT_HINTS = {("lora_model_dir", "loratrf_mode")}


def hint_allowed(key: str, suggestion: str) -> bool:
    return (key, suggestion) not in NOT_HINTS
