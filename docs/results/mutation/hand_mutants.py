"""Apply hand-picked mutants one at a time; the test named for each must fail. Restores each file.

Run it on a separate worktree, never on a checkout that training runs import from:

    git worktree add --detach /tmp/mutants-check HEAD
    python docs/results/mutation/hand_mutants.py /tmp/mutants-check [FIRST [LAST]]

FIRST (default 0), LAST (default: all): run only cases FIRST to LAST - 1 (e.g. 22 for the
fifth session's, 80 for the sixth's, 130 for the ninth's: ifl.py, 146: report.py,
151: a sampler, 164: the eleventh session's).
Each case runs the named test with PYTHONPATH set to the worktree's src. Exit status 1 when a
mutant survives or its test is skipped (the end-to-end cases need the CIFAR-10 JPEG copy: set
TAILFUSE_CIFAR10_JPEG when the worktree is not beside ../shared).
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[3]).resolve()
CASES = [
    (
        "src/tailfuse/methods/cmo.py",
        "np.clip(centre_r - cut_h // 2, 0, height)",
        "np.clip(centre_r - cut_h / 2, 0, height)",
        "tests/methods/test_cmo_and_gcl.py::"
        "test_cutmix_box_odd_sides_and_a_rectangular_image_by_hand",
    ),
    (
        "src/tailfuse/methods/cmo.py",
        "np.clip(centre_c - cut_w // 2, 0, width)",
        "np.clip(centre_c - cut_w / 2, 0, width)",
        "tests/methods/test_cmo_and_gcl.py::"
        "test_cutmix_box_odd_sides_and_a_rectangular_image_by_hand",
    ),
    (
        "src/tailfuse/methods/cmo.py",
        "np.clip(centre_c + cut_w // 2, 0, width)",
        "np.clip(centre_c + cut_w // 2, 0, None)",
        "tests/methods/test_cmo_and_gcl.py::test_cutmix_box_side_and_clipping_by_hand",
    ),
    (
        "src/tailfuse/methods/cmo.py",
        "np.clip(centre_r + cut_h // 2, 0, height)",
        "np.clip(centre_r + cut_h // 2, 1, height)",
        "tests/methods/test_cmo_and_gcl.py::test_cutmix_box_for_lambda_one_is_empty",
    ),
    (
        "src/tailfuse/eval/compare_report.py",
        "statistics.stdev(numbers) if len(numbers) > 1 else 0.0\n        summary",
        "statistics.stdev(numbers) if len(numbers) >= 1 else 0.0\n        summary",
        "tests/eval/test_compare_report.py::"
        "test_one_seed_of_a_row_without_medium_classes_has_zero_spread_and_its_seed",
    ),
    (
        "src/tailfuse/eval/compare_report.py",
        "statistics.stdev(numbers) if len(numbers) > 1 else 0.0\n        summary",
        "statistics.stdev(numbers) if len(numbers) > 1 else 1.0\n        summary",
        "tests/eval/test_compare_report.py::"
        "test_one_seed_of_a_row_without_medium_classes_has_zero_spread_and_its_seed",
    ),
    (
        "src/tailfuse/methods/tade.py",
        "        weight_decay=options.weight_decay,\n",
        "",
        "tests/methods/test_tade.py::test_two_plain_sgd_steps_with_weight_decay_by_hand",
    ),
    (
        "src/tailfuse/methods/tade.py",
        "total, images = torch.zeros((), device=device), 0",
        "total, images = torch.zeros((), device=device), 1",
        "tests/methods/test_tade.py::"
        "test_the_epoch_similarity_is_the_image_weighted_mean_and_the_arguments_reach_the_views",
    ),
    (
        "src/tailfuse/methods/tade.py",
        "images += len(first)",
        "images = len(first)",
        "tests/methods/test_tade.py::"
        "test_the_epoch_similarity_is_the_image_weighted_mean_and_the_arguments_reach_the_views",
    ),
    (
        "src/tailfuse/methods/tade.py",
        "float(total / max(images, 1))",
        "float(total / max(images, 2))",
        "tests/methods/test_tade.py::"
        "test_the_epoch_similarity_is_the_image_weighted_mean_and_the_arguments_reach_the_views",
    ),
    (
        "src/tailfuse/methods/tade.py",
        "views.batches(options.batch_size, epoch, options.colour_distortion)",
        "views.batches(options.batch_size, None, options.colour_distortion)",
        "tests/methods/test_tade.py::"
        "test_the_epoch_similarity_is_the_image_weighted_mean_and_the_arguments_reach_the_views",
    ),
    (
        "src/tailfuse/methods/tade.py",
        "0).min() < options.stop_below",
        "0).min() <= options.stop_below",
        "tests/methods/test_tade.py::"
        "test_the_early_stop_needs_a_weight_strictly_below_the_threshold",
    ),
    (
        "src/tailfuse/methods/tade.py",
        '"kind": "tade_self_supervised_aggregation"',
        '"KIND": "tade_self_supervised_aggregation"',
        "tests/methods/test_tade.py::"
        "test_the_epoch_similarity_is_the_image_weighted_mean_and_the_arguments_reach_the_views",
    ),
    (
        "src/tailfuse/losses/reweighting.py",
        "self.epoch = 0",
        "self.epoch = 1",
        "tests/losses/test_gcl_and_reweighting.py::"
        "test_class_reweighting_defaults_are_cuis_beta_from_the_first_epoch",
    ),
    (
        "src/tailfuse/losses/reweighting.py",
        "beta: float = 0.9999",
        "beta: float = 1.9999",
        "tests/losses/test_gcl_and_reweighting.py::"
        "test_class_reweighting_defaults_are_cuis_beta_from_the_first_epoch",
    ),
    (
        "src/tailfuse/losses/label_aware_smoothing.py",
        'shape: str = "concave",\n    power: float | None = None,\n) -> list',
        'shape: str = "CONCAVE",\n    power: float | None = None,\n) -> list',
        "tests/losses/test_label_aware_smoothing.py::"
        "test_the_defaults_are_mislas_concave_from_0_4_to_0_1",
    ),
    (
        "src/tailfuse/losses/label_aware_smoothing.py",
        "smooth_head: float = 0.4,",
        "smooth_head: float = 1.4,",
        "tests/losses/test_label_aware_smoothing.py::"
        "test_the_defaults_are_mislas_concave_from_0_4_to_0_1",
    ),
    (
        "src/tailfuse/losses/label_aware_smoothing.py",
        "span = max(n_max - n_min, 1)",
        "span = max(n_max - n_min, 2)",
        "tests/losses/test_label_aware_smoothing.py::test_counts_one_apart_span_the_whole_range",
    ),
    (
        # RIDE's margins are LDAM's since f1ef507 (losses/margins.ldam_margins)
        "src/tailfuse/losses/margins.py",
        "(margins * (max_m / margins.max()))",
        "(margins * (max_m * margins.max()))",
        "tests/losses/test_experts.py::test_ride_margins_are_scaled_so_the_rarest_class_gets_max_m",
    ),
    (
        "src/tailfuse/losses/gcl.py",
        "span = max(logs) - min(logs)",
        "span = max(logs) + min(logs)",
        "tests/losses/test_gcl_and_reweighting.py::"
        "test_noise_scale_is_the_log_count_gap_over_its_range",
    ),
    (
        "src/tailfuse/eval/glt.py",
        "non_finite = int((~finite_rows).sum())",
        "non_finite = 0",
        "tests/eval/test_glt.py::test_a_sample_with_non_finite_logits_predicts_no_class",
    ),
    (
        "src/tailfuse/engine/runtime.py",
        'return "bf16" if cpu_has_native_bf16() else "fp32"',
        'return "bf16"',
        "tests/engine/test_precision_and_loaders.py::"
        "test_auto_precision_is_bf16_only_on_a_cpu_with_native_bfloat16",
    ),
    # fifth session: survivors of the full run's first 1,700 mutants
    (
        "src/tailfuse/methods/erm.py",
        "if self.options.mixup_alpha > 0:",
        "if self.options.mixup_alpha >= 0:",
        "tests/methods/test_erm_step.py::"
        "test_without_mixup_the_step_draws_nothing_from_the_augmentation_stream",
    ),
    (
        "src/tailfuse/methods/erm.py",
        "pool=whole.images,",
        "pool=None,",
        "tests/methods/test_erm_step.py::"
        "test_a_processs_share_of_the_global_batch_mixes_as_one_process_would",
    ),
    (
        "src/tailfuse/methods/erm.py",
        "                start=batch.start,\n",
        "",
        "tests/methods/test_erm_step.py::"
        "test_a_processs_share_of_the_global_batch_mixes_as_one_process_would",
    ),
    (
        "src/tailfuse/losses/experts.py",
        "if self.diversity_factor != 0:",
        "if self.diversity_factor != 1:",
        "tests/losses/test_experts.py::test_ride_loss_with_a_diversity_factor_of_one",
    ),
    (
        "src/tailfuse/losses/margins.py",
        "logits - F.one_hot(labels, cosine.shape[1]) * self.margins",
        "logits - F.one_hot(labels) * self.margins",
        "tests/losses/test_margins.py::test_kps_loss_on_a_batch_without_the_last_class",
    ),
    (
        "src/tailfuse/losses/logit_adjustment.py",
        "gamma: float = 2.0, detach_factor",
        "gamma: float = 3.0, detach_factor",
        "tests/losses/test_logit_adjustment.py::test_focal_loss_default_gamma_is_lins_two",
    ),
    (
        "src/tailfuse/methods/decoupled.py",
        "self.fusing_sampler = build_sampler(fusing, labels, num_classes, samples)",
        "self.fusing_sampler = build_sampler(fusing, labels, num_classes, None)",
        "tests/methods/test_stage2_fidelity_methods.py::"
        "test_mislas_lws_with_h2t_draws_its_fusing_branch_as_many_images_from_its_sampler",
    ),
    (
        "src/tailfuse/methods/decoupled.py",
        'branches["fusing"] = self.fusing_sampler\n        return branches\n\n\nregister',
        'branches["FUSING"] = self.fusing_sampler\n        return branches\n\n\nregister',
        "tests/methods/test_stage2_fidelity_methods.py::"
        "test_mislas_lws_with_h2t_draws_its_fusing_branch_as_many_images_from_its_sampler",
    ),
    (
        "src/tailfuse/eval/glt.py",
        'cell(v)}" for n, v in metrics["class_splits"]',
        'cell(None)}" for n, v in metrics["class_splits"]',
        "tests/eval/test_glt.py::test_the_printed_protocol_line_and_the_seed_table_in_full",
    ),
    (
        "src/tailfuse/eval/glt_table.py",
        'for protocol in ("CLT", "GLT", "ALT"):',
        'for protocol in ("CLT", "glt", "ALT"):',
        "tests/eval/test_glt.py::test_the_printed_protocol_line_and_the_seed_table_in_full",
    ),
    (
        "src/tailfuse/eval/glt_table.py",
        '        lines.append("")\n    return "\\n".join(lines)',
        '        lines.append("XXXX")\n    return "\\n".join(lines)',
        "tests/eval/test_glt.py::test_the_printed_protocol_line_and_the_seed_table_in_full",
    ),
    (
        "src/tailfuse/eval/compare_report.py",
        'str(item.get("source", ""))',
        'str(item.get("source", None))',
        "tests/eval/test_compare_report.py::"
        "test_published_figures_match_by_label_then_recipe_then_its_stem",
    ),
    # fifth session: survivors of the full run's mutants 1,700 to 2,000
    (
        "src/tailfuse/losses/gcl.py",
        "m: float = 0.0,\n        s: float = 30.0,\n        noise_mul: float = 0.5,",
        "m: float = 0.0,\n        s: float = 31.0,\n        noise_mul: float = 0.5,",
        "tests/losses/test_gcl_and_reweighting.py::"
        "test_gcl_defaults_are_the_stage1_constants_m_0_s_30_noise_half",
    ),
    (
        "src/tailfuse/losses/gcl.py",
        "m: float = 0.0,\n        s: float = 30.0,\n        noise_mul: float = 0.5,",
        "m: float = 0.0,\n        s: float = 30.0,\n        noise_mul: float = 1.5,",
        "tests/losses/test_gcl_and_reweighting.py::"
        "test_gcl_defaults_are_the_stage1_constants_m_0_s_30_noise_half",
    ),
    (
        "src/tailfuse/losses/gcl.py",
        "m: float = 0.0,\n        s: float = 30.0,\n        noise_mul: float = 0.5,",
        "m: float = 1.0,\n        s: float = 30.0,\n        noise_mul: float = 0.5,",
        "tests/losses/test_gcl_and_reweighting.py::"
        "test_gcl_defaults_are_the_stage1_constants_m_0_s_30_noise_half",
    ),
    (
        "src/tailfuse/losses/logit_adjustment.py",
        "tau: float = 1.0):",
        "tau: float = 2.0):",
        "tests/losses/test_logit_adjustment.py::"
        "test_logit_adjusted_default_tau_is_one_balanced_softmax",
    ),
    (
        "src/tailfuse/losses/experts.py",
        "class_counts: list[int], tau: float = 2.0):",
        "class_counts: list[int], tau: float = 3.0):",
        "tests/losses/test_experts.py::test_tade_loss_default_tau_is_two",
    ),
    (
        "src/tailfuse/methods/tade.py",
        "return TADELoss(self.class_counts, tau=self.options.tau)",
        "return TADELoss(self.class_counts)",
        "tests/methods/test_experts.py::test_expert_methods_hand_their_options_to_their_losses",
    ),
    (
        "src/tailfuse/methods/reslt.py",
        "auxiliary)\n"
        "        self.criterion = ResLoss(class_counts, beta=options.beta, groups=options.groups)",
        "auxiliary)\n        self.criterion = ResLoss(class_counts, beta=options.beta)",
        "tests/methods/test_experts.py::test_expert_methods_hand_their_options_to_their_losses",
    ),
    (
        "src/tailfuse/methods/decoupled.py",
        "module.weight.data.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)",
        "module.weight.data.uniform_(-2, 1).renorm_(2, 1, 1e-5).mul_(1e5)",
        "tests/methods/test_decoupled.py::"
        "test_crt_draws_a_fresh_cosine_head_as_the_authors_normed_linear_does",
    ),
    (
        "src/tailfuse/methods/decoupled.py",
        "module.weight.data.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)",
        "module.weight.data.uniform_(-1, 1).renorm_(3, 1, 1e-5).mul_(1e5)",
        "tests/methods/test_decoupled.py::"
        "test_crt_draws_a_fresh_cosine_head_as_the_authors_normed_linear_does",
    ),
    (
        "src/tailfuse/methods/decoupled.py",
        "module.weight.data.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)",
        "module.weight.data.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(100001.0)",
        "tests/methods/test_decoupled.py::"
        "test_crt_draws_a_fresh_cosine_head_as_the_authors_normed_linear_does",
    ),
    (
        "src/tailfuse/methods/decoupled.py",
        "return torch.stack([self._tau_logits(head, one) for one in feature_map]).mean(0)",
        "return torch.stack([self._tau_logits(head, one) for one in feature_map]).mean(1)",
        "tests/methods/test_decoupled.py::"
        "test_tau_norm_of_one_linear_head_shared_by_several_maps_averages_their_logits",
    ),
    (
        "src/tailfuse/methods/cmo.py",
        "box = cutmix_box(batch.images.shape[-2], batch.images.shape[-1], lam, rng)",
        "box = cutmix_box(batch.images.shape[-2], batch.images.shape[-2], lam, rng)",
        "tests/methods/test_cmo_and_gcl.py::test_cmo_loss_mixes_labels_by_the_pasted_area",
    ),
    (
        "src/tailfuse/methods/gcl.py",
        "raise ConfigError(\n"
        '                "method.name=gcl needs model.head=cosine (GCL works on cosine logits)"\n'
        "            )",
        "raise ConfigError(None)",
        "tests/methods/test_cmo_and_gcl.py::"
        "test_gcl_stage2_trains_the_cosine_head_with_eval_mode_batchnorm_and_predicts_s_cos",
    ),
    # fifth session: survivors of the full run's mutants 2,000 to 2,900
    (
        "src/tailfuse/methods/h2t.py",
        "    if count == 0:\n        return fused",
        "    if count == 1:\n        return fused",
        "tests/methods/test_h2t.py::test_a_ratio_that_gives_one_channel_replaces_exactly_one",
    ),
    (
        "src/tailfuse/methods/h2t.py",
        "[\n            fuse_channels(f, d, ratio, generator, channels, mixing)",
        "[\n            fuse_channels(f, d, ratio, None, channels, mixing)",
        "tests/methods/test_h2t.py::test_the_subsets_come_from_the_given_generator_alone",
    ),
    (
        "src/tailfuse/methods/h2t.py",
        "[\n            fuse_channels(f, d, ratio, generator, channels, mixing)",
        "[\n            fuse_channels(f, d, ratio, generator, channels, None)",
        "tests/methods/test_h2t.py::test_soft_mixing_reaches_every_expert_map",
    ),
    (
        "src/tailfuse/methods/h2t.py",
        "torch.rand(batch, num_channels, generator=generator, device=fused.device)",
        "torch.rand(batch, num_channels, device=fused.device)",
        "tests/methods/test_h2t.py::test_the_subsets_come_from_the_given_generator_alone",
    ),
    (
        "src/tailfuse/methods/ffn.py",
        'derive_seed(self.config.train.seed, 0, "ffn:evaluation-order")',
        'derive_seed(self.config.train.seed, 1, "ffn:evaluation-order")',
        "tests/methods/test_stage2_fidelity_methods.py::"
        "test_ffn_train_mode_batchnorm_evaluates_in_seeded_shuffled_batches_of_256",
    ),
    (
        "src/tailfuse/methods/ffn.py",
        "torch.randperm(num_samples, generator=generator)",
        "torch.randperm(num_samples, generator=None)",
        "tests/methods/test_stage2_fidelity_methods.py::"
        "test_ffn_train_mode_batchnorm_evaluates_in_seeded_shuffled_batches_of_256",
    ),
    (
        "src/tailfuse/losses/experts.py",
        "beta: float = 0.99, groups",
        "beta: float = 1.99, groups",
        "tests/losses/test_experts.py::test_reslt_loss_default_beta_is_the_authors_0_99",
    ),
    (
        "src/tailfuse/losses/reweighting.py",
        "            self.loss.set_epoch(epoch)",
        "            self.loss.set_epoch(None)",
        "tests/losses/test_gcl_and_reweighting.py::"
        "test_reweighting_passes_the_epoch_to_a_loss_with_its_own_schedule",
    ),
    (
        "src/tailfuse/losses/reweighting.py",
        'if hasattr(self.loss, "set_epoch"):',
        'if hasattr(None, "set_epoch"):',
        "tests/losses/test_gcl_and_reweighting.py::"
        "test_reweighting_passes_the_epoch_to_a_loss_with_its_own_schedule",
    ),
    (
        "src/tailfuse/methods/decoupled.py",
        'advance_loss(self.criterion, context.epoch, context.randomness.stream("loss"))\n'
        "        return self.criterion(\n            self.head_logits",
        'advance_loss(self.criterion, context.epoch, context.randomness.stream("LOSS"))\n'
        "        return self.criterion(\n            self.head_logits",
        "tests/methods/test_cmo_and_gcl.py::"
        "test_gcl_stage2_trains_the_cosine_head_with_eval_mode_batchnorm_and_predicts_s_cos",
    ),
    # fifth session: survivors of the full run's mutants 2,900 to 3,400
    (
        "src/tailfuse/losses/margins.py",
        "max_m: float = 0.5,\n        s: float = 30.0,\n        drw_epoch",
        "max_m: float = 1.5,\n        s: float = 30.0,\n        drw_epoch",
        "tests/losses/test_margins.py::"
        "test_ldam_defaults_max_m_half_and_unweighted_until_set_epoch",
    ),
    (
        "src/tailfuse/losses/margins.py",
        "margins * (max_m / margins.max())",
        "margins * (max_m * margins.max())",
        "tests/losses/test_margins.py::"
        "test_ldam_defaults_max_m_half_and_unweighted_until_set_epoch",
    ),
    (
        "src/tailfuse/losses/margins.py",
        "        self.drw_epoch = drw_epoch\n        self.epoch = 0",
        "        self.drw_epoch = drw_epoch\n        self.epoch = 1",
        "tests/losses/test_margins.py::"
        "test_ldam_defaults_max_m_half_and_unweighted_until_set_epoch",
    ),
    (
        "src/tailfuse/methods/decoupled.py",
        'if options.trains not in ("head", "head_and_scales"):',
        'if options.trains not in ("head", "HEAD_AND_SCALES"):',
        "tests/methods/test_decoupled.py::test_mislas_with_lws_trains_the_head_too",
    ),
    (
        "src/tailfuse/methods/decoupled.py",
        '        if options.loss == "label_aware_smoothing":\n            smoothing',
        '        if options.loss == "LABEL_AWARE_SMOOTHING":\n            smoothing',
        "tests/methods/test_decoupled.py::test_mislas_smoothing_options_reach_its_loss",
    ),
    (
        "src/tailfuse/methods/decoupled.py",
        "                power=smoothing.power,",
        "                power=None,",
        "tests/methods/test_decoupled.py::test_mislas_smoothing_options_reach_its_loss",
    ),
    (
        "src/tailfuse/methods/ffn.py",
        "self.criterion = build_loss(options.loss, class_counts, **options.loss_options)",
        "self.criterion = build_loss(options.loss, class_counts)",
        "tests/methods/test_ffn.py::test_the_loss_options_reach_the_ldam_loss",
    ),
    (
        "src/tailfuse/engine/trainer.py",
        "            flat[name] = value",
        "            flat[name] = None",
        "tests/engine/test_trainer.py::"
        "test_config_differences_name_every_changed_added_and_removed_nested_key",
    ),
    (
        "src/tailfuse/engine/trainer.py",
        "for key in old.keys() | new.keys() if",
        "for key in old.keys() & new.keys() if",
        "tests/engine/test_trainer.py::"
        "test_config_differences_name_every_changed_added_and_removed_nested_key",
    ),
    (
        "src/tailfuse/eval/compare_report.py",
        'fields = (\n        ["method", "recipe", "runs"]',
        'fields = (\n        ["method", "RECIPE", "runs"]',
        "tests/eval/test_compare_report.py::"
        "test_table_csv_and_json_hold_mean_and_sample_std_by_hand",
    ),
    (
        "src/tailfuse/eval/compare_report.py",
        'entry["recipe"], entry["overrides"] = row.recipe, row.overrides',
        'entry["RECIPE"], entry["overrides"] = row.recipe, row.overrides',
        "tests/eval/test_compare_report.py::"
        "test_table_csv_and_json_hold_mean_and_sample_std_by_hand",
    ),
    (
        "src/tailfuse/eval/compare_report.py",
        "{'; '.join(sources)}.\" if sources else",
        "{'; '.join(sources)}.\" if sources or True else",
        "tests/eval/test_compare_report.py::"
        "test_a_row_without_a_paper_figure_shows_dashes_beside_one_with",
    ),
    # fifth session: survivors of the full run's mutants 3,400 to 3,500 (engine/trainer.py)
    (
        "src/tailfuse/engine/trainer.py",
        "(every > 0 and epoch_number % every == 0)",
        "(every > 0 and epoch_number % every != 0)",
        "tests/engine/test_selection.py::test_which_epochs_are_evaluated",
    ),
    (
        "src/tailfuse/engine/trainer.py",
        "    return epoch_number == config.train.epochs or (every",
        "    return epoch_number == config.train.epochs and (every",
        "tests/engine/test_selection.py::test_which_epochs_are_evaluated",
    ),
    (
        "src/tailfuse/engine/trainer.py",
        'if rule == "best_test":  # the authors',
        'if rule != "best_test":  # the authors',
        "tests/engine/test_selection.py::test_which_epochs_are_evaluated",
    ),
    (
        "src/tailfuse/engine/trainer.py",
        "enumerate(zip(saved_names, names)) if a != b)",
        "enumerate(zip(saved_names, names)) if a == b)",
        "tests/engine/test_trainer.py::"
        "test_class_checks_say_which_label_differs_or_how_many_classes",
    ),
    (
        "src/tailfuse/engine/trainer.py",
        "    if position is not None:\n        detail",
        "    if position is None:\n        detail",
        "tests/engine/test_trainer.py::"
        "test_class_checks_say_which_label_differs_or_how_many_classes",
    ),
    (
        "src/tailfuse/engine/trainer.py",
        "and config.init is None\n        and not config.model.weights\n    ):",
        "and config.init is None\n        and config.model.weights\n    ):",
        "tests/engine/test_trainer.py::test_a_stage2_method_without_a_trained_model_is_refused",
    ),
    (
        "src/tailfuse/engine/trainer.py",
        "and config.init is None\n        and not config.model.weights\n    ):",
        "and config.init is not None\n        and not config.model.weights\n    ):",
        "tests/engine/test_trainer.py::test_a_stage2_method_without_a_trained_model_is_refused",
    ),
    # _train_locked survivors: end-to-end tests outside mutmut's selection
    # (one new: selection "auto")
    (
        "src/tailfuse/engine/trainer.py",
        "rule = selection_rule(config, data.validation is not None)",
        "rule = selection_rule(config, data.validation is None)",
        "tests/engine/test_selection.py::test_the_selected_epoch_and_its_test_score",
    ),
    (
        "src/tailfuse/engine/trainer.py",
        "TrainingSession(config, data, runtime, initialize=initialize,",
        "TrainingSession(config, data, runtime, initialize=None,",
        "tests/engine/test_stages.py::test_one_command_trains_stage1_then_stage2",
    ),
    (
        "src/tailfuse/engine/trainer.py",
        'write_text_atomically(\n            out_dir / "config.yaml"',
        'write_text_atomically(\n            out_dir / "CONFIG.YAML"',
        "tests/test_cli.py::test_train_eval_summary_and_bench_through_the_cli",
    ),
    (
        "src/tailfuse/engine/trainer.py",
        'saved_content = saved_data.get("content_checksum")',
        "saved_content = None",
        "tests/test_reliability.py::"
        "test_another_dataset_of_the_same_layout_is_refused_on_resume_and_as_stage1",
    ),
    # sixth session: survivors among the mutants the fifth session's run left unchecked
    (
        "src/tailfuse/eval/metrics.py",
        "labels: torch.Tensor, bins: int = 15) -> dict:",
        "labels: torch.Tensor, bins: int = 16) -> dict:",
        "tests/eval/test_metric_values.py::test_calibration_bins_worked_example",
    ),
    (
        "src/tailfuse/eval/metrics.py",
        "safe = counts.clamp_min(1).double()",
        "safe = counts.clamp_min(2).double()",
        "tests/eval/test_metric_values.py::test_calibration_bins_worked_example",
    ),
    (
        "src/tailfuse/eval/metrics.py",
        "bin_index = confidence_bins(confidence, bins)\n    counts",
        "bin_index = confidence_bins(confidence)\n    counts",
        "tests/eval/test_metric_values.py::test_calibration_bins_take_the_bin_count_they_are_given",
    ),
    (
        "src/tailfuse/eval/metrics.py",
        '"calibration": calibration_bins(calibration_scale * logits, labels, 15)',
        '"calibration": calibration_bins(calibration_scale * logits, labels, 16)',
        "tests/eval/test_metric_values.py::"
        "test_classification_metrics_bin_by_fifteen_and_keep_the_labels_in_calibration",
    ),
    (
        "src/tailfuse/eval/metrics.py",
        '"calibration": calibration_bins(calibration_scale * logits, labels, 15)',
        '"calibration": calibration_bins(calibration_scale * logits, 15)',
        "tests/eval/test_metric_values.py::"
        "test_classification_metrics_bin_by_fifteen_and_keep_the_labels_in_calibration",
    ),
    (
        "src/tailfuse/eval/metrics.py",
        '"ece": expected_calibration_error(calibration_scale * logits, labels, 15)',
        '"ece": expected_calibration_error(calibration_scale * logits, labels, 16)',
        "tests/eval/test_metric_values.py::"
        "test_classification_metrics_bin_by_fifteen_and_keep_the_labels_in_calibration",
    ),
    (
        "src/tailfuse/eval/metrics.py",
        "labels: torch.Tensor, bins: int = 15) -> float:",
        "labels: torch.Tensor, bins: int = 16) -> float:",
        "tests/eval/test_metric_values.py::"
        "test_classification_metrics_bin_by_fifteen_and_keep_the_labels_in_calibration",
    ),
    (
        "src/tailfuse/eval/metrics.py",
        '"top5": topk_accuracy(logits, labels, 5)',
        '"top5": topk_accuracy(logits, labels, 6)',
        "tests/eval/test_metric_values.py::test_top5_is_the_five_highest_logits",
    ),
    (
        "src/tailfuse/eval/metrics.py",
        "labels: torch.Tensor, k: int = 1) -> float:",
        "labels: torch.Tensor, k: int = 2) -> float:",
        "tests/eval/test_metric_values.py::test_top5_is_the_five_highest_logits",
    ),
    (
        "src/tailfuse/eval/metrics.py",
        "confidence: torch.Tensor, bins: int = 15) -> torch.Tensor:",
        "confidence: torch.Tensor, bins: int = 16) -> torch.Tensor:",
        "tests/eval/test_metrics.py::test_confidence_bins_stay_in_range_and_default_to_fifteen",
    ),
    (
        "src/tailfuse/eval/metrics.py",
        ".clamp(0, bins - 1).long()",
        ".clamp(None, bins - 1).long()",
        "tests/eval/test_metrics.py::test_confidence_bins_stay_in_range_and_default_to_fifteen",
    ),
    (
        "src/tailfuse/eval/metrics.py",
        ".clamp(0, bins - 1).long()",
        ".clamp(0, bins + 1).long()",
        "tests/eval/test_metrics.py::test_confidence_bins_stay_in_range_and_default_to_fifteen",
    ),
    (
        "src/tailfuse/eval/metrics.py",
        "bin_index = confidence_bins(confidence, bins)\n    total",
        "bin_index = confidence_bins(confidence)\n    total",
        "tests/eval/test_metrics.py::test_ece_uses_the_bin_count_it_is_given",
    ),
    (
        "src/tailfuse/eval/glt.py",
        "        lines += [\n",
        "        lines = [\n",
        "tests/eval/test_glt.py::test_the_protocol_markdown_in_full_with_an_empty_split",
    ),
    (
        "src/tailfuse/eval/glt.py",
        'return "–"',
        'return "XX–XX"',
        "tests/eval/test_glt.py::test_the_protocol_markdown_in_full_with_an_empty_split",
    ),
    (
        "src/tailfuse/eval/glt.py",
        "int(max(predictions.max(), labels.max())) + 1",
        "int(max(predictions.max(), labels.max())) - 1",
        "tests/eval/test_glt.py::"
        "test_predicted_labels_of_a_one_class_set_score_without_a_class_count",
    ),
    (
        "src/tailfuse/eval/glt.py",
        "        if not members:\n            continue",
        "        if not members:\n            break",
        "tests/eval/test_glt.py::"
        "test_a_split_of_two_classes_divides_by_two_and_an_absent_split_is_skipped_not_the_rest",
    ),
    (
        "src/tailfuse/eval/glt.py",
        "sample_precision[in_group].sum().item() / len(members)",
        "sample_precision[in_group].sum().item() * len(members)",
        "tests/eval/test_glt.py::"
        "test_a_split_of_two_classes_divides_by_two_and_an_absent_split_is_skipped_not_the_rest",
    ),
    (
        "src/tailfuse/eval/glt.py",
        "predictions[predictions >= 0], minlength=num_classes)",
        "predictions[predictions >= 0])",
        "tests/eval/test_glt.py::test_a_set_of_one_image_and_a_set_of_only_non_finite_logits",
    ),
    (
        "src/tailfuse/eval/glt.py",
        "if labels.numel() == 0:",
        "if labels.numel() == 1:",
        "tests/eval/test_glt.py::test_a_set_of_one_image_and_a_set_of_only_non_finite_logits",
    ),
    (
        "src/tailfuse/eval/glt.py",
        "if accuracy + precision > 0 else 0.0",
        "if accuracy - precision > 0 else 0.0",
        "tests/eval/test_glt.py::"
        "test_f1_is_the_harmonic_mean_of_accuracy_and_precision_and_zero_when_both_are",
    ),
    (
        "src/tailfuse/eval/glt.py",
        "if accuracy + precision > 0 else 0.0",
        "if accuracy + precision > 1 else 0.0",
        "tests/eval/test_glt.py::"
        "test_f1_is_the_harmonic_mean_of_accuracy_and_precision_and_zero_when_both_are",
    ),
    (
        "src/tailfuse/eval/glt.py",
        "if accuracy + precision > 0 else 0.0",
        "if accuracy + precision > 0 else 1.0",
        "tests/eval/test_glt.py::"
        "test_f1_is_the_harmonic_mean_of_accuracy_and_precision_and_zero_when_both_are",
    ),
    (
        "src/tailfuse/eval/glt.py",
        '"f1": math.nan, "count": 0}',
        '"f1": math.nan, "count": 1}',
        "tests/eval/test_glt.py::test_a_set_of_one_image_and_a_set_of_only_non_finite_logits",
    ),
    (
        "src/tailfuse/losses/cross_entropy.py",
        "None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)",
        "None",
        "tests/losses/test_cross_entropy.py::"
        "test_class_weights_of_the_constructor_weight_each_sample_unless_a_call_replaces_them",
    ),
    (
        "src/tailfuse/losses/cross_entropy.py",
        "weight = class_weights if class_weights is not None else self.class_weights",
        "weight = class_weights",
        "tests/losses/test_cross_entropy.py::"
        "test_class_weights_of_the_constructor_weight_each_sample_unless_a_call_replaces_them",
    ),
    (
        "src/tailfuse/losses/logit_adjustment.py",
        "counts.sum() + 1e-12)",
        "counts.sum() - 1e-12)",
        "tests/losses/test_logit_adjustment.py::"
        "test_log_prior_of_a_class_without_training_images_is_finite",
    ),
    (
        "src/tailfuse/losses/cross_entropy.py",
        "torch.tensor(class_weights, dtype=torch.float32)",
        "torch.tensor(class_weights)",
        "tests/losses/test_cross_entropy.py::"
        "test_class_weights_of_the_constructor_weight_each_sample_unless_a_call_replaces_them",
    ),
    (
        "src/tailfuse/losses/cross_entropy.py",
        '"class_weights", weights, persistent=False)',
        '"class_weights", weights, persistent=True)',
        "tests/losses/test_cross_entropy.py::"
        "test_class_weights_of_the_constructor_weight_each_sample_unless_a_call_replaces_them",
    ),
    (
        "src/tailfuse/losses/__init__.py",
        "f\"unknown loss '{name}'{did_you_mean(name, LOSSES)}; choose from \"",
        "f\"unknown loss '{name}'; choose from \"",
        "tests/losses/test_cross_entropy.py::"
        "test_an_unknown_loss_name_is_one_error_with_a_suggestion",
    ),
    (
        "src/tailfuse/losses/__init__.py",
        "f\"{', '.join(sorted(LOSSES))}\"",
        "f\"{'XX, XX'.join(sorted(LOSSES))}\"",
        "tests/losses/test_cross_entropy.py::"
        "test_an_unknown_loss_name_is_one_error_with_a_suggestion",
    ),
    (
        "src/tailfuse/losses/__init__.py",
        "raise ConfigError(f\"loss '{name}': {error}\") from None",
        "raise ConfigError(None) from None",
        "tests/losses/test_cross_entropy.py::test_a_bad_loss_option_is_one_error_naming_the_loss",
    ),
    (
        "src/tailfuse/losses/__init__.py",
        "if not 0.0 <= beta < 1.0:",
        "if not 0.0 < beta < 1.0:",
        "tests/losses/test_gcl_and_reweighting.py::test_beta_may_be_zero_but_not_one",
    ),
    (
        "src/tailfuse/losses/__init__.py",
        "if not 0.0 <= beta < 1.0:",
        "if not 0.0 <= beta <= 1.0:",
        "tests/losses/test_gcl_and_reweighting.py::test_beta_may_be_zero_but_not_one",
    ),
    (
        "src/tailfuse/losses/__init__.py",
        "if not 0.0 <= beta < 1.0:",
        "if not 0.0 <= beta < 2.0:",
        "tests/losses/test_gcl_and_reweighting.py::test_beta_may_be_zero_but_not_one",
    ),
    (
        "src/tailfuse/engine/trainer.py",
        'if "validation_top1" in record:',
        'if "validation_top1" not in record:',
        "tests/engine/test_trainer.py::"
        "test_the_progress_line_of_an_epoch_without_steps_shows_no_nan_loss",
    ),
    (
        "src/tailfuse/engine/trainer.py",
        "text += f\" val {record['validation_top1']:.2f}\"",
        "text = f\" val {record['validation_top1']:.2f}\"",
        "tests/engine/test_trainer.py::"
        "test_the_progress_line_of_an_epoch_without_steps_shows_no_nan_loss",
    ),
    (
        # (the check moved to session.warn_non_finite in the seventh session)
        "src/tailfuse/engine/session.py",
        "if non_finite and is_main:",
        "if non_finite or is_main:",
        "tests/engine/test_trainer.py::"
        "test_a_glt_test_set_with_non_finite_logits_is_scored_wrong_and_warned_about",
    ),
    # sixth session: trainer survivors that tests outside mutmut's selection kill
    (
        "src/tailfuse/engine/trainer.py",
        "    data = session.data\n    adaptation = session.adapt_to_unlabelled(data.test)",
        "    data = session.data\n    adaptation = None",
        "tests/methods/test_tade.py::"
        "test_learned_weights_through_the_cli_and_eval_ignore_the_labels",
    ),
    # with the final epoch already evaluated, `and` only evaluates it again (same numbers);
    # a run that evaluates no epoch (eval_every 0, as the TADE test) must then fail
    (
        "src/tailfuse/engine/trainer.py",
        "final_epoch_metrics = final_epoch_metrics or _evaluate_splits(session, data)",
        "final_epoch_metrics = final_epoch_metrics and _evaluate_splits(session, data)",
        "tests/methods/test_tade.py::"
        "test_learned_weights_through_the_cli_and_eval_ignore_the_labels",
    ),
    (
        "src/tailfuse/engine/trainer.py",
        '"seed": config.train.seed,',
        '"SEED": config.train.seed,',
        "tests/engine/test_trainer.py::"
        "test_results_hold_every_metric_and_selection_uses_validation",
    ),
    (
        "src/tailfuse/engine/trainer.py",
        '"finished": time.strftime("%Y-%m-%dT%H:%M:%S"),',
        '"finished": time.strftime("%Y-%M-%DT%H:%M:%S"),',
        "tests/engine/test_trainer.py::"
        "test_results_hold_every_metric_and_selection_uses_validation",
    ),
    (
        "src/tailfuse/engine/trainer.py",
        '"threads": torch.get_num_threads(),',
        '"THREADS": torch.get_num_threads(),',
        "tests/engine/test_trainer.py::"
        "test_results_hold_every_metric_and_selection_uses_validation",
    ),
    (
        "src/tailfuse/engine/trainer.py",
        "    if adaptation is not None:  # the loop's evaluations predate it",
        "    if adaptation is None:  # the loop's evaluations predate it",
        "tests/methods/test_tade.py::"
        "test_scores_after_an_evaluated_epoch_are_those_of_the_adapted_model",
    ),
    (
        "src/tailfuse/engine/compare.py",
        "for run in startable(waiting, unfinished)[: jobs - len(running)]:",
        "for run in list(waiting)[: jobs - len(running)]:",
        "tests/engine/test_compare.py::"
        "test_stage2_rows_share_the_stage1_run_of_each_seed_with_the_stage1_row",
    ),
    (
        "src/tailfuse/engine/compare.py",
        "    return [run for run in waiting if not unfinished.intersection(earlier_run_dirs(run))]",
        "    return list(waiting)",
        "tests/engine/test_compare.py::"
        "test_runs_start_in_row_order_each_once_its_stage1_is_finished",
    ),
    (
        "src/tailfuse/engine/compare.py",
        'return f"stopped after epoch {max(epochs)} of {run.config.train.epochs}"',
        'return f"stopped after epoch {min(epochs)} of {run.config.train.epochs}"',
        "tests/engine/test_compare.py::"
        "test_plan_says_what_compare_would_run_in_which_order_and_trains_nothing",
    ),
    (
        "src/tailfuse/engine/compare.py",
        "        if waits and not run.finished:",
        "        if not waits and not run.finished:",
        "tests/engine/test_compare.py::"
        "test_plan_says_what_compare_would_run_in_which_order_and_trains_nothing",
    ),
    (
        "src/tailfuse/engine/compare.py",
        "            if not all(cells[(row.label, seed)].finished for seed in seeds)",
        "            if not any(cells[(row.label, seed)].finished for seed in seeds)",
        "tests/engine/test_compare.py::"
        "test_report_only_tables_the_finished_rows_names_the_others_and_trains_nothing",
    ),
    (
        "src/tailfuse/eval/compare_report.py",
        '"unfinished_rows": list(unfinished_rows),',
        '"unfinished_rows": [],',
        "tests/engine/test_compare.py::"
        "test_report_only_tables_the_finished_rows_names_the_others_and_trains_nothing",
    ),
    (
        "src/tailfuse/methods/ifl.py",
        "head_count = torch.floor(0.8 * count)",
        "head_count = torch.ceil(0.8 * count)",
        "tests/methods/test_ifl_values.py::"
        "test_environment_weights_follow_the_per_class_rule_for_any_class_size",
    ),
    (
        "src/tailfuse/methods/ifl.py",
        "tail_count = torch.floor(0.2 * count)",
        "tail_count = torch.ceil(0.2 * count)",
        "tests/methods/test_ifl_values.py::"
        "test_environment_weights_follow_the_per_class_rule_for_any_class_size",
    ),
    (
        "src/tailfuse/methods/ifl.py",
        "torch.where(in_tail, u, 0.0)",
        "torch.where(in_head, 0.0, u)",
        "tests/methods/test_ifl_values.py::"
        "test_environment_weights_follow_the_per_class_rule_for_any_class_size",
    ),
    (
        "src/tailfuse/methods/ifl.py",
        "beta = (math.log(sample_scale) / torch.log(ratio)).clamp(1.0, 10.0)",
        "beta = (math.log(sample_scale) / torch.log(ratio)).clamp(1.0, 9.0)",
        "tests/methods/test_ifl_values.py::"
        "test_environment_weights_follow_the_per_class_rule_for_any_class_size",
    ),
    (
        "src/tailfuse/methods/ifl.py",
        "+ (1.0 - lam) * self.criterion(\n            logits, partner_labels",
        "+ lam * self.criterion(\n            logits, partner_labels",
        "tests/methods/test_ifl_values.py::"
        "test_mixup_weights_the_own_label_by_lambda_and_the_partners_by_one_minus_lambda",
    ),
    (
        "src/tailfuse/methods/ifl.py",
        "                lam * term\n                + (1.0 - lam) * center_distance",
        "                (1.0 - lam) * term\n                + lam * center_distance",
        "tests/methods/test_ifl_values.py::"
        "test_mixup_weights_the_own_label_by_lambda_and_the_partners_by_one_minus_lambda",
    ),
    (
        "src/tailfuse/methods/ifl.py",
        "self.record_order.fill_(-1)",
        "pass",
        "tests/methods/test_ifl.py::"
        "test_a_step_records_confidence_and_moves_centers_only_when_alpha_is_positive",
    ),
    (
        "src/tailfuse/methods/ifl.py",
        'self.confidence.fill_(float("nan"))',
        "self.confidence.fill_(0.5)",
        "tests/methods/test_ifl.py::"
        "test_a_step_records_confidence_and_moves_centers_only_when_alpha_is_positive",
    ),
    (
        "src/tailfuse/methods/ifl.py",
        "        if epoch >= milestone:\n            alpha = weight",
        "        if epoch > milestone:\n            alpha = weight",
        "tests/methods/test_ifl.py::test_center_weight_follows_the_milestones",
    ),
    (
        "src/tailfuse/methods/ifl.py",
        "few = count[classes] < 5",
        "few = count[classes] <= 5",
        "tests/methods/test_ifl.py::test_environment_weights_on_a_hand_made_confidence_table",
    ),
    (
        "src/tailfuse/methods/ifl.py",
        "else [self.options.sample_scale // 2, self.options.sample_scale]",
        "else [self.options.sample_scale, self.options.sample_scale // 2]",
        "tests/methods/test_ifl_values.py::"
        "test_three_environments_rebuild_env2_with_half_the_scale_and_env3_with_the_scale",
    ),
    (
        "src/tailfuse/methods/ifl.py",
        "self.state.centers.sub_(",
        "self.state.centers.add_(",
        "tests/methods/test_ifl.py::test_center_update_is_the_moving_average_rule",
    ),
    (
        "src/tailfuse/methods/ifl.py",
        "and context.epoch + 1 == self._first_center_epoch()",
        "and context.epoch == self._first_center_epoch()",
        "tests/methods/test_ifl_values.py::"
        "test_class_mean_center_init_sets_centers_to_the_last_warmup_epochs_class_means",
    ),
    (
        "src/tailfuse/methods/ifl.py",
        "scaled = (p - low[classes]) / (high[classes] - low[classes] + 1e-9)",
        "scaled = p",
        "tests/methods/test_ifl_values.py::"
        "test_environment_weights_min_max_scale_a_narrow_confidence_range",
    ),
    (
        "src/tailfuse/methods/ifl.py",
        "logits = torch.stack(expert_logits).mean(0)",
        "logits = expert_logits[0]",
        "tests/methods/test_experts.py::"
        "test_ifl_on_experts_records_the_expert_mean_and_centers_the_joined_features",
    ),
    (
        "src/tailfuse/methods/ifl.py",
        "weights = torch.ones_like(weights)",
        "pass",
        "tests/methods/test_ifl.py::test_an_environment_without_weight_draws_every_image_uniformly",
    ),
    (
        "src/tailfuse/eval/report.py",
        "if scale != 1.0:",
        "if scale >= 1.0:",
        "tests/eval/test_report.py::test_report_lists_metrics_groups_and_classes_in_order",
    ),
    (
        "src/tailfuse/eval/report.py",
        "return value if math.isfinite(value) else None",
        "return value",
        "tests/eval/test_report.py::test_results_json_is_strict_json_with_nan_and_infinity_as_null",
    ),
    (
        "src/tailfuse/eval/report.py",
        "or (isinstance(value, float) and math.isnan(value)) else",
        "or False else",
        "tests/eval/test_report.py::test_report_lists_metrics_groups_and_classes_in_order",
    ),
    (
        "src/tailfuse/eval/report.py",
        '    if results["test"].get("calibration"):\n        plot_reliability_diagram(',
        "    if True:\n        plot_reliability_diagram(",
        "tests/eval/test_report.py::test_results_json_is_strict_json_with_nan_and_infinity_as_null",
    ),
    (
        "src/tailfuse/eval/report.py",
        "{_number(test['per_class_precision'][c])} |",
        "{_number(test['per_class_accuracy'][c])} |",
        "tests/eval/test_report.py::test_report_lists_metrics_groups_and_classes_in_order",
    ),
    (
        "src/tailfuse/data/rebalancing_samplers.py",
        "        if self.total_epochs <= 1:\n            return 0.0",
        "        if self.total_epochs <= 1:\n            return 1.0",
        "tests/data/test_rebalancing_samplers.py::"
        "test_progressive_power_goes_from_power_one_to_zero",
    ),
    # tenth session: the audit of the parallel merges (predict, stage 2 on experts, readers)
    (
        "src/tailfuse/engine/predict.py",
        "        method = build_method(config, model, class_counts)\n"
        '        load_weights(model, saved["session"]["model"], checkpoint)\n',
        '        load_weights(model, saved["session"]["model"], checkpoint)\n'
        "        method = build_method(config, model, class_counts)\n",
        "tests/engine/test_predict_export.py::test_predict_follows_the_method_formula[crt]",
    ),
    (
        "src/tailfuse/engine/predict.py",
        "torch.softmax(self.probability_scale * logits, dim=1)",
        "torch.softmax(logits, dim=1)",
        "tests/engine/test_predict_export.py::test_predict_follows_the_method_formula[ldam]",
    ),
    (
        "src/tailfuse/methods/ride.py",
        '        advance_loss(self.criterion, context.epoch, context.randomness.stream("loss"))\n'
        "        features = self.balanced_features(batches, context)",
        "        features = self.balanced_features(batches, context)",
        "tests/methods/test_experts.py::test_ride_stage2_follows_the_epoch_of_its_loss",
    ),
    (
        "src/tailfuse/methods/ride.py",
        'epoch_length: Literal["dataset", "max_class"] = "max_class"',
        'epoch_length: Literal["dataset", "max_class"] = "dataset"',
        "tests/methods/test_experts.py::"
        "test_ride_stage2_trains_the_expert_classifiers_with_class_aware_batches",
    ),
    (
        "src/tailfuse/methods/reslt.py",
        "        if options.loss_options:",
        "        if False:",
        "tests/methods/test_experts.py::test_reslt_stage2_refuses_loss_options_it_would_ignore",
    ),
    (
        "src/tailfuse/config.py",
        '    "class_order",\n',
        "",
        "tests/data/test_glt.py::test_glt_sources_refuse_the_long_tail_keys_they_ignore",
    ),
    (
        "src/tailfuse/config.py",
        "    test: float = Field(0.2, gt=0.0, lt=1.0)\n    seed: int = Field(0, ge=0, lt=2**32)",
        "    test: float = Field(0.2, gt=0.0, lt=1.0)\n    seed: int = 0",
        "tests/test_reliability.py::test_other_bad_inputs_are_one_line",
    ),
    (
        "src/tailfuse/data/prepare.py",
        "    if weights and os.path.abspath(os.path.expanduser(weights)) != weights:",
        "    if False:",
        "tests/engine/test_stage2_fidelity_runs.py::"
        "test_relative_pretrained_weights_are_made_absolute_data_roots_too",
    ),
    (
        "src/tailfuse/engine/compare.py",
        'not isinstance(results.get("test"), dict)',
        "False",
        "tests/engine/test_compare.py::"
        "test_report_only_tables_the_finished_rows_names_the_others_and_trains_nothing",
    ),
    (
        "src/tailfuse/engine/sweep.py",
        "    if not isinstance(saved, dict):",
        "    if False:",
        "tests/test_reliability.py::test_sweep_does_not_reuse_results_of_other_overrides",
    ),
    (
        "src/tailfuse/commands.py",
        "write_text_atomically(Path(arguments.out), text)",
        "Path(arguments.out).write_text(text)",
        "tests/engine/test_predict_export.py::"
        "test_predict_out_replaces_an_earlier_file_whole_or_not_at_all",
    ),
    (
        "src/tailfuse/engine/tsne.py",
        'rule = selection.get("rule") if isinstance(selection, dict) else None',
        'rule = selection.get("rule")',
        "tests/engine/test_selection.py::"
        "test_tsne_picks_the_reported_checkpoint_and_names_a_damaged_results_file",
    ),
    # eleventh session: ResLT's ImageNet model, CLI dependency errors, CMO + LDAM-DRW
    (
        "src/tailfuse/models/expert_heads.py",
        "linear.weight / norms.pow(self.eval_weight_power)",
        "linear.weight / norms",
        "tests/models/test_experts.py::test_reslt_channel_split_head_by_hand",
    ),
    (
        "src/tailfuse/models/expert_heads.py",
        "return features @ (linear.weight / norms.pow(self.eval_weight_power)).t()",
        "return linear(features)",
        "tests/models/test_experts.py::test_reslt_channel_split_head_by_hand",
    ),
    (
        "src/tailfuse/models/expert_heads.py",
        "return torch.cat(self.pool(feature_map).chunk(3, dim=1), dim=0)",
        "return torch.cat(self.pool(feature_map).chunk(3, dim=1)[::-1], dim=0)",
        "tests/models/test_experts.py::test_reslt_channel_split_head_by_hand",
    ),
    (
        "src/tailfuse/models/ride.py",
        "if self.training or not self.pool_first_in_eval:",
        "if True:",
        "tests/models/test_experts.py::"
        "test_reslt_block_pools_after_itself_in_training_and_before_in_evaluation",
    ),
    (
        "src/tailfuse/models/ride.py",
        "if self.training or not self.pool_first_in_eval:",
        "if self.training:",
        "tests/models/test_experts.py::"
        "test_reslt_block_pools_after_itself_in_training_and_before_in_evaluation",
    ),
    (
        "src/tailfuse/models/ride.py",
        "self.out_channels = planes[1] * Bottleneck.expansion * (3 if reslt_block else 1)",
        "self.out_channels = planes[1] * Bottleneck.expansion",
        "tests/models/test_experts.py::test_ride_resnet50_experts_and_the_reslt_imagenet_model",
    ),
    (
        "src/tailfuse/models/__init__.py",
        'if reslt_block != (config.head == "reslt_channel_split"):',
        'if not reslt_block and config.head == "reslt_channel_split":',
        "tests/models/test_experts.py::test_heads_must_fit_the_backbone",
    ),
    (
        "src/tailfuse/cli.py",
        '"numpy", "yaml", "pydantic"',
        '"numpy", "pydantic"',
        "tests/test_cli.py::test_a_missing_required_dependency_is_one_line",
    ),
    (
        "src/tailfuse/methods/cmo.py",
        'advance_loss(self.criterion, context.epoch, context.randomness.stream("loss"))',
        "pass",
        "tests/methods/test_cmo_and_gcl.py::"
        "test_cmo_with_ldam_drw_inside_its_window_mixes_the_two_ldam_losses_by_area",
    ),
]
failures = 0
FIRST = int(sys.argv[2]) if len(sys.argv) > 2 else 0
LAST = int(sys.argv[3]) if len(sys.argv) > 3 else len(CASES)
for path, old, new, test in CASES[FIRST:LAST]:
    file = ROOT / path
    original = file.read_text()
    assert original.count(old) == 1, (path, old, original.count(old))
    file.write_text(original.replace(old, new))
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-x",
                "-rs",
                "-n",
                "0",
                "-p",
                "no:randomly",
                "-p",
                "no:cacheprovider",
                test,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        )
        rc = done.returncode
    finally:
        file.write_text(original)
    if rc == 0 and "skipped" in done.stdout:  # e.g. no CIFAR-10 copy: nothing was judged
        rc = 5
    verdict = (
        "killed"
        if rc == 1
        else f"SURVIVED (rc {rc})"
        if rc != 5
        else "NOT JUDGED (test skipped; set TAILFUSE_CIFAR10_JPEG)"
    )
    failures += rc != 1
    print(f"{verdict}: {path}: {old.strip()[:60]!r} -> {new.strip()[:60]!r}", flush=True)
print("all killed" if not failures else f"{failures} not killed")
sys.exit(1 if failures else 0)
