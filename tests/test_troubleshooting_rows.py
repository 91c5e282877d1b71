"""Every row of the troubleshooting page has a test, and the rows that had none get one.

``ROW_TESTS`` maps each row (the first 60 characters of its first cell) to the test
that checks what the row says; a row added to the page without an entry here, or an
entry naming a test that does not exist, fails :func:`test_every_row_names_an_existing_test`.
The tests below cover the rows that had none: the refusal of an image mode with no
faithful RGB, the conversion warnings' texts, the one-line SIGTERM message of
``prepare``, seeds beyond 32 bits for ``prepare --split-seed`` and ``pca --seed``, and
a feature chunk refused for values float16 cannot hold not being marked done.
"""

# ruff: noqa: E501  (ROW_TESTS: one row and its test per line)
from __future__ import annotations

import ast
import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from brainencoder.cli.main import main

ROOT = Path(__file__).parents[1]
TROUBLESHOOTING = ROOT / "docs" / "troubleshooting.md"

ROW_TESTS = {
    "`adapt ... folds=1` (the folds that choose the pull toward t": "tests/test_adapt_loop.py::test_adapt_overrides_are_checked_as_train_checks_them",
    "no `subjXX` folders": "tests/test_synthetic_layout.py::test_validate_missing_and_duplicate_subjects",
    "`subj1` and `subj01`": "tests/test_synthetic_layout.py::test_validate_missing_and_duplicate_subjects",
    "a subject folder missing (`subj02` of 3)": "tests/test_synthetic_layout.py::test_validate_missing_and_duplicate_subjects",
    "truncated fMRI `.npy`": "tests/test_synthetic_layout.py::test_validate_reports_every_problem_by_file",
    "fMRI rows != images, or columns != mask vertices": "tests/test_synthetic_layout.py::test_validate_shape_mismatches",
    "NaN / inf in fMRI": "tests/test_synthetic_layout.py::test_validate_reports_every_problem_by_file",
    "corrupt or truncated PNG": "tests/test_evaluate_submit.py::test_predict_any_images_and_cli",
    "grayscale, palette, RGBA, 16-bit, 32-bit integer, float imag": "tests/test_troubleshooting_rows.py::test_conversion_warnings_are_the_quoted_ones",
    "image mode with no faithful RGB": "tests/test_troubleshooting_rows.py::test_an_image_mode_with_no_faithful_rgb_is_refused",
    "float image (mode F file or image, float array or tensor) ou": "tests/test_untrusted_images.py::test_float_images_hold_values_in_0_1_clipped_within_a_stated_tolerance",
    "mode I (32-bit integer) image holding 8-bit values, or beyon": "tests/test_untrusted_images.py::test_mode_I_images_hold_16_bit_values_or_are_refused",
    "torch tensor given to `predict` channels first, or another s": "tests/test_untrusted_images.py::test_tensors_and_float_arrays_that_cannot_be_read_are_refused_by_name",
    "`predict(batch_size=0)` (or -1, 2.5, True) in Python": "tests/test_untrusted_images.py::test_batch_size_must_be_a_positive_integer",
    "decompression-bomb image": "tests/test_inputs.py::test_large_jpeg_decodes_with_bounded_memory_and_bombs_are_refused",
    "a FIFO, device, folder or broken link in an image folder": "tests/test_inputs.py::test_gaps_duplicates_and_odd_files_are_problems_by_file",
    "image names without zero padding (`train-1_`, `train-10_`)": "tests/test_inputs.py::test_images_pair_with_fmri_rows_by_parsed_index",
    "fMRI that overflows float16 at `prepare --fmri-dtype float16": "tests/test_store.py::test_prepare_checks_the_fmri_before_any_image_and_leaves_nothing",
    "float64 fMRI beyond float32's range": "tests/test_store.py::test_prepare_checks_the_fmri_before_any_image_and_leaves_nothing",
    "`prepare` stopped by an undecodable image": "tests/test_evaluate_submit.py::test_predict_any_images_and_cli",
    "image or folder names that are not UTF-8": "tests/test_inputs.py::test_validate_prints_file_names_that_are_not_utf8",
    "non-numeric fMRI array": "tests/test_inputs.py::test_fmri_checked_as_stored",
    "YAML config with aliases, over 1 MiB, or not a mapping": "tests/test_inputs.py::test_yaml_configs_are_bounded_mappings",
    "`evaluate --store` with a store of other data, image size, s": "tests/test_compare.py::test_compare_refuses_runs_of_another_store_as_evaluate_does",
    "`compare` with a run (or `--ensemble` member) trained on ano": "tests/test_compare.py::test_compare_refuses_runs_of_another_store_as_evaluate_does",
    "`evaluate`/`compare` on val or testval, `soup`, or `submit -": "tests/test_train_on.py::test_training_on_train_and_val_uses_both_and_keeps_the_last_epoch",
    "a model file that records no training splits (older brainenc": "tests/test_held_out.py::test_a_file_that_records_nothing_needs_trust_splits",
    "a model file evaluated on a store of the same data with othe": "tests/test_held_out.py::test_a_store_with_other_splits_of_the_same_data_is_refused",
    "`train ... init_from=FINAL` (a model that trained on val) wi": "tests/test_train_on.py::test_training_on_train_and_val_uses_both_and_keeps_the_last_epoch",
    "`evaluate MODEL.safetensors --store S` without `--out`; `RUN": "tests/test_held_out.py::test_evaluate_writes_only_into_its_own_folder",
    "`submit RUN --data DATA` where DATA's masks select other fsa": "tests/test_untrusted_vertices.py::test_submit_refuses_data_of_other_vertices_with_the_same_counts",
    "`submit` with a run that lacks one of DATA's subjects": "tests/test_untrusted_vertices.py::test_submit_refuses_a_run_lacking_a_subject_of_the_data",
    "`Prediction.roi` given the `data` folder of another dataset,": "tests/test_untrusted_vertices.py::test_roi_refuses_data_of_other_vertices",
    "`Prediction.plot` of image 99 of 12 (out of range), or a non": "tests/test_untrusted_vertices.py::test_plot_refuses_image_indices_out_of_range",
    "HDF5 image dataset compressed in chunks that span many image": "tests/test_untrusted_misc.py::test_an_hdf5_dataset_whose_chunks_decompress_too_much_per_image_is_refused",
    "HDF5 image file with a damaged chunk, or a compression filte": "tests/test_untrusted_misc.py::test_a_damaged_hdf5_chunk_is_a_one_line_error_naming_the_file_and_row",
    "`wandb: true` without a W&B login (no `WANDB_API_KEY`, no `w": "tests/test_untrusted_misc.py::test_wandb_without_a_login_is_a_one_line_error_before_the_run_folder",
    "a file or folder named like a packaged config (`demo/`) in t": "tests/test_untrusted_misc.py::test_a_folder_or_file_named_like_a_packaged_config_never_hides_it",
    "an ensemble (`be.load(a, b)`, `compare --ensemble`) of runs ": "tests/test_untrusted_misc.py::test_an_ensemble_of_stores_of_two_image_sizes_names_both_runs_and_sizes",
    "a `pandas.py` / `safetensors.py` (any module name) in the wo": "tests/test_untrusted_code.py::test_a_plugin_in_a_downloaded_folder_shadows_no_installed_module",
    "a Hugging Face folder or cached model whose `config.json` ha": "tests/test_untrusted_code.py::test_a_folder_whose_config_ships_code_is_refused_without_a_prompt",
    "a model file whose header names an HF trunk folder but holds": "tests/test_untrusted_code.py::test_a_header_without_the_trunk_config_is_refused_and_the_folder_never_read",
    "`image_mean` / `image_std` that is a scalar, 4 values or a s": "tests/test_untrusted_code.py::test_bad_folder_values_are_one_line_errors_naming_the_file",
    "pickled `pytorch_model.bin` that tries to run code; truncate": "tests/test_untrusted_code.py::test_truncated_weights_are_a_one_line_error",
    "HF `crop_size` / `size` / `image_size` / header `input_size`": "tests/test_untrusted_code.py::test_a_crop_size_beyond_the_limit_is_refused_before_the_dry_run",
    "model header describing a larger model than its tensors (rea": "tests/test_untrusted_header.py::test_a_header_describing_a_huge_model_is_refused_before_anything_is_built",
    "model header whose trunk or LoRA rank outgrows the file (`de": "tests/test_untrusted_header.py::test_a_header_describing_a_huge_model_is_refused_before_anything_is_built",
    "image normalisation std of [0, 0, 0] or a 4-value mean (mode": "tests/test_untrusted_header.py::test_image_settings_share_the_config_rules",
    "model header subjects, group-space arrays or JSON values tha": "tests/test_untrusted_header.py::test_subjects_group_space_and_json_values_are_one_line_errors",
    "the run's store was moved": "tests/test_inputs.py::test_evaluate_refuses_another_store_and_names_a_moved_one",
    "truncated or edited run files": "tests/test_reliability.py::test_truncated_or_edited_run_files_give_one_line_errors",
    "trunk features that a feature cache would store wrongly (NaN": "tests/test_troubleshooting_rows.py::test_a_refused_feature_chunk_is_not_marked_done",
    "read-only store when a feature cache is needed": "tests/test_reliability.py::test_read_only_store_and_full_disk_give_clear_errors",
    "disk full (or read-only, no permission) while writing": "tests/test_reliability.py::test_full_disk_while_saving_a_model_or_pca_is_one_line",
    "`--out` that is a folder, or the wrong kind of file": "tests/test_overwrite.py::test_out_that_is_a_folder_is_refused_before_any_work",
    "SIGTERM or Ctrl-C during `prepare`": "tests/test_troubleshooting_rows.py::test_sigterm_during_prepare_is_one_line",
    "`prepare` killed outright (SIGKILL)": "tests/test_store.py::test_prepare_survives_sigkill",
    "a run folder crafted to inject script into `report`": "tests/test_evaluate_submit.py::test_crafted_report_runs_no_script_in_headless_chromium",
    "`adapt` with a subject the model already has": "tests/test_adapt.py::test_adapt_errors_a_user_will_hit",
    "`adapt --data` without that subject": "tests/test_adapt.py::test_adapt_errors_a_user_will_hit",
    "`adapt --n-images` larger than the subject has": "tests/test_adapt.py::test_adapt_errors_a_user_will_hit",
    "`adapt --data STORE` at another image size than the run's": "tests/test_adapt.py::test_adapt_errors_a_user_will_hit",
    "any failing `adapt`": "tests/test_adapt.py::test_a_failed_adapt_leaves_no_folder_and_the_rerun_works",
    "a seed beyond 32 bits (`adapt --seed`, `pca --seed`, `seed=`": "tests/test_troubleshooting_rows.py::test_seeds_beyond_32_bits_are_refused_by_prepare_and_pca",
    "`--batch-size 0`, `--workers -1`": "tests/test_inputs.py::test_non_positive_numbers_are_refused_by_name",
    "`init_from` a model of another vertex space": "tests/test_reliability.py::test_mismatched_subjects_are_refused",
    "a non-image file in an image folder": "tests/test_synthetic_layout.py::test_validate_reports_every_problem_by_file",
    "missing mask": "tests/test_cli.py::test_cli_validate_broken_exits_1",
    "ROI labels of the wrong length": "tests/test_synthetic_layout.py::test_validate_shape_mismatches",
    "mapping file that is not a dict of int -> str": "tests/test_fileio.py::test_save_mapping_round_trip",
    "mapping pickle that tries to run code": "tests/test_synthetic_layout.py::test_validate_reports_every_problem_by_file",
    "subject with no test images": "tests/test_synthetic_layout.py::test_validate_notes_grayscale_and_empty_test",
    "store written by another format version": "tests/test_store.py::test_prepare_float16_and_version_check",
    "`prepare` into a folder holding something else": "tests/test_own_data.py::test_prepare_resumes_a_killed_conversion",
    "interrupted `prepare`": "tests/test_store.py::test_prepare_resumes_after_partial_work",
    "interrupted feature caching (SIGKILL)": "tests/test_reliability.py::test_sigkill_feature_caching_then_resume",
    "interrupted training (SIGKILL, Ctrl-C)": "tests/test_claims.py::test_sigterm_during_training_saves_a_checkpoint",
    "interrupted `submit`": "tests/test_reliability.py::test_sigkill_submit_leaves_no_partial_zip",
    "not enough disk for a store or feature cache": "tests/test_store.py::test_prepare_checks_disk_space_up_front",
    "unknown config key / bad value": "tests/test_train.py::test_config_layers_and_errors",
    "bad nested model key": "tests/test_models.py::test_encoder_factory_rejects_unknown",
    "unknown encoder, readout or loss": "tests/test_readouts.py::test_registry_errors_list_valid_names",
    "`smoothness` on a readout without per-vertex tuning": "tests/test_smoothness.py::test_smoothness_is_refused_for_a_readout_without_tuning_and_below_zero",
    "`smoothness` where nilearn has no fsaverage mesh": "tests/test_smoothness.py::test_a_mesh_nilearn_cannot_load_is_a_clear_error",
    "`trunk_kwargs` the trunk does not take": "tests/test_models.py::test_convnet_trunk_img_size_optional_other_kwargs_refused",
    "`model.trunk_kwargs={checkpoint_path: PATH}`": "tests/test_models.py::test_trunk_checkpoint_path_is_refused_for_trunk_weights",
    "a micro-batch of one sample (`batch_size=2 grad_accum=2`)": "tests/test_train.py::test_seeds_and_micro_batches_are_refused_before_any_work",
    "`pearson` loss with `grad_accum > 1` or under torchrun": "tests/test_losses.py::test_pearson_refused_where_it_would_change",
    "training loss becomes NaN / inf": "tests/test_losses.py::test_non_finite_loss_stops_before_any_update",
    "model file with NaN / inf weights": "tests/test_readouts.py::test_model_files_with_non_finite_weights_are_refused",
    "`--overwrite` on the data, the current folder or a folder br": "tests/test_compare.py::test_compare_out_follows_the_ownership_rules",
    "`explore --out` / `compare --out` in the image folder, the d": "tests/test_explore.py::test_explore_out_follows_the_ownership_rules",
    "`explore --data` of another dataset with the same vertex cou": "tests/test_one_place.py::test_explore_data_space_error_names_the_vertices",
    "original checkpoint that needs code to load": "tests/test_original.py::test_import_original_refuses_bad_files",
    "original checkpoint of another data / trunk": "tests/test_original.py::test_import_original_refuses_bad_files",
    "original checkpoint or PCA file with shapes the original nev": "tests/test_original.py::test_import_original_refuses_malformed_shapes_in_one_line",
    "freeze pattern matching nothing": "tests/test_models.py::test_freeze_patterns",
    "more PCA components than samples": "tests/test_models.py::test_pca_component_limits",
    "checkpoint from another model configuration": "tests/test_models.py::test_save_load_round_trip_with_pca",
    "resuming with another config": "tests/test_train.py::test_resume_is_bitwise_identical",
    "run directory already used": "tests/test_train.py::test_train_learns_and_writes_run",
    "pretrained weights offline": "tests/test_models.py::test_pretrained_offline_gives_instructions",
    "submission with wrong shape / dtype / NaN / missing subject": "tests/test_evaluate_submit.py::test_submission_round_trip_and_validation",
    "zip member escaping its folder": "tests/test_evaluate_submit.py::test_submission_round_trip_and_validation",
    "`score` of a zip lacking a subject or a hemisphere, or with ": "tests/test_evaluate_submit.py::test_score_refuses_incomplete_and_non_float_zips",
    "damaged zip member: bad CRC, encrypted, unknown compression": "tests/test_evaluate_submit.py::test_damaged_zip_members_are_one_line_errors",
    "zip bomb, or a member larger than its array": "tests/test_evaluate_submit.py::test_zip_members_are_read_only_up_to_their_expected_size",
    "held-back test responses (`compare`/`evaluate --split test`,": "tests/test_evaluate_submit.py::test_pickled_or_text_test_responses_are_refused",
    "own layout: a column missing from `trials.csv`": "tests/test_own_data.py::test_validate_lists_every_problem_of_the_layout",
    "own layout: trials naming images that are not there": "tests/test_own_data.py::test_validate_lists_every_problem_of_the_layout",
    "own layout: two columns with the same vertex": "tests/test_own_data.py::test_validate_lists_every_problem_of_the_layout",
    "own layout: NaN / inf in a trial's responses": "tests/test_synthetic_layout.py::test_validate_reports_every_problem_by_file",
    "own layout: `--noise-ceiling` where every image has one tria": "tests/test_own_data.py::test_a_noise_ceiling_needs_repeated_trials",
    "own layout: a row beyond the responses; an image in both spl": "tests/test_own_data.py::test_validate_lists_every_problem_of_the_layout",
    "own layout: an undecodable image": "tests/test_evaluate_submit.py::test_predict_any_images_and_cli",
    "`hf:ORG/NAME` not downloaded (`be.load`, any command)": "tests/test_export.py::test_a_hub_name_not_in_the_cache_is_one_line_saying_where_and_how",
    "`hf:` without a hub id (`hf:../x`, `hf:a/b/c`)": "tests/test_export.py::test_a_hub_name_not_in_the_cache_is_one_line_saying_where_and_how",
    "`export RUN DIR`, DIR holding your files (even with `--overw": "tests/test_compare.py::test_compare_out_follows_the_ownership_rules",
    "`export` of an unfinished run; after the data the store came": "tests/test_export.py::test_an_exported_ensemble_is_held_out_only_where_every_member_is",
    "`export RUN RUN` of other datasets or image sizes": "tests/test_untrusted_vertices.py::test_submit_refuses_data_of_other_vertices_with_the_same_counts",
    "a model header naming a path of this machine": "tests/test_export.py::test_the_folder_holds_the_model_rois_and_card_and_nothing_of_this_machine",
    "`evaluate hf:ORG/NAME --store S` without `--out`; `adapt` of": "tests/test_export.py::test_every_command_that_takes_a_run_takes_an_exported_folder",
    "a received exported folder: a file linking outside it, missi": "tests/test_export.py::test_a_received_folder_is_checked_as_untrusted",
    "`synth --world` with a name it does not know": "tests/test_worlds.py::test_unknown_world_is_one_line_listing_the_names",
    "`calibrate` runs that trained on every split": "tests/test_intervals.py::test_no_held_out_rows_is_refused",
    "`predict --interval` with no calibration, or other or retrai": "tests/test_intervals.py::test_calibration_of_other_runs_is_refused",
    "`synthesize` given a ridge run": "tests/test_synthesize.py::test_a_ridge_run_is_refused",
    "`adapt --images LIST` with a name it lacks, twice, or too fe": "tests/test_adapt_images.py::test_a_bad_list_is_one_line_naming_the_file_and_line",
    "`model.trunks` with one entry, or trunk dropout with one tru": "tests/test_multi_trunk.py::test_config_errors_name_the_key",
    "`plan --method disagreement` from one run; `--n` over the po": "tests/test_plan.py::test_disagreement_needs_an_ensemble_and_works_with_one",
    "`plan --out list.txt` where `list.png` exists (the picture `": "tests/test_plan.py::test_plan_never_replaces_a_picture_it_did_not_write",
    "`be.load` of one run with per-ROI weights": "tests/test_ensemble_weights.py::test_weights_refuse_one_run_an_unknown_scheme_and_a_run_that_saw_val",
}


def _rows() -> list[tuple[str, str]]:
    """(first cell, the rest) of every row of the page's tables."""
    rows = []
    for line in TROUBLESHOOTING.read_text().splitlines():
        if not line.startswith("| ") or line.startswith(("| input |", "|---")):
            continue
        first, _, rest = line.strip().strip("|").partition(" | ")
        rows.append((first.strip(), rest.strip()))
    return rows


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}


def test_every_row_names_an_existing_test():
    rows = _rows()
    assert len(rows) > 100
    problems = [
        f"no entry in ROW_TESTS for row {f[:60]!r}" for f, _ in rows if f[:60] not in ROW_TESTS
    ]
    firsts = {f[:60] for f, _ in rows}
    problems += [
        f"ROW_TESTS names a row the page no longer has: {k!r}" for k in ROW_TESTS if k not in firsts
    ]
    for row, test in ROW_TESTS.items():
        file, _, name = test.partition("::")
        if not (ROOT / file).is_file() or name not in _test_names(ROOT / file):
            problems.append(f"row {row!r}: {test} does not exist")
    assert not problems, "\n".join(problems)


def _cell(first: str) -> str:
    (cell,) = [rest for f, rest in _rows() if f.startswith(first)]
    return cell


def _quoted(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


# --------------------------------------------------------------------------- image modes


def test_an_image_mode_with_no_faithful_rgb_is_refused(tmp_path):
    """A LAB image: validate's blocking problem is the quoted line; decoding refuses it too."""
    from PIL import Image

    from brainencoder.data.images import load_image
    from brainencoder.data.problems import check_image
    from brainencoder.util.errors import DataError

    (quoted,) = _quoted(_cell("image mode with no faithful RGB"))
    path = tmp_path / "lab.tiff"
    Image.new("LAB", (8, 8)).save(path)
    problem = check_image(path)
    assert problem is not None and problem.blocking
    head, tail = quoted.removeprefix("ERROR ...: ").split(" ... ")
    assert str(problem).endswith(f"{head} LAB {tail}"), (quoted, str(problem))
    assert str(path) in str(problem)
    with pytest.raises(DataError, match=r"lab.tiff: image mode LAB cannot be converted to RGB"):
        load_image(path)


def test_conversion_warnings_are_the_quoted_ones(tmp_path):
    """L, I;16, I, F and RGBA files: validate warns with the page's texts, not blocking."""
    from PIL import Image

    from brainencoder.data.problems import check_image

    quoted = [q.removeprefix("... ") for q in _quoted(_cell("grayscale, palette, RGBA"))[:5]]
    ramp = np.tile(np.linspace(0, 1, 8), (8, 1))
    files = {
        "l.png": Image.fromarray(np.rint(ramp * 255).astype(np.uint8), "L"),
        "i16.png": Image.fromarray(np.rint(ramp * 65535).astype(np.uint16)),
        "i32.tiff": Image.fromarray(np.rint(ramp * 65535).astype(np.int32), "I"),
        "f.tiff": Image.fromarray(ramp.astype(np.float32)),
        "rgba.png": Image.fromarray(np.zeros((8, 8, 4), np.uint8), "RGBA"),
    }
    seen = []
    for name, img in files.items():
        img.save(tmp_path / name)
        problem = check_image(tmp_path / name)
        assert problem is not None and not problem.blocking, name
        seen.append(str(problem).split(": ", 1)[1].removeprefix("image mode "))
    expected = [q.removeprefix("WARNING ...: image mode ") for q in quoted]
    assert [s.replace("I;16B", "I;16") for s in seen] == expected


# --------------------------------------------------------------------------- prepare


def test_sigterm_during_prepare_is_one_line(synth_root, tmp_path, monkeypatch, capsys):
    """SIGTERM while prepare's workers decode: the page's line, exit status 130, no traceback."""
    import brainencoder.data.prepare as prepare

    (quoted,) = _quoted(_cell("SIGTERM or Ctrl-C during `prepare`"))
    real = prepare._sync_while_decoding

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
        return real(*args, **kwargs)

    monkeypatch.setattr(prepare, "_sync_while_decoding", terminated)
    argv = ["prepare", str(synth_root), str(tmp_path / "s"), "--workers", "1", "--image-size", "32"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == quoted and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "key"),
    [
        (["prepare", "{data}", "{tmp}/s", "--split-seed", str(2**32)], "split_seed"),
        (["pca", "{store}", "--out", "{tmp}/p.safetensors", "--seed", str(2**32)], "seed"),
    ],
    ids=["prepare-split-seed", "pca-seed"],
)
def test_seeds_beyond_32_bits_are_refused_by_prepare_and_pca(
    argv, key, synth_root, store, tmp_path, capsys
):
    (quoted, *_) = _quoted(_cell("a seed beyond 32 bits"))
    names = {"data": synth_root, "store": store.path, "tmp": tmp_path}
    assert main([a.format(**names) for a in argv]) != 0
    err = capsys.readouterr().err.strip().splitlines()[-1]
    rule = quoted.replace("'seed'", f"'{key}'").split("; got")[0]
    assert err.startswith(rule) and err.endswith(f"got {2**32}: choose a smaller seed"), err
    assert not (tmp_path / "s").exists() and not (tmp_path / "p.safetensors").exists()


# --------------------------------------------------------------------------- feature cache


def test_a_refused_feature_chunk_is_not_marked_done(store, tmp_path, monkeypatch):
    """Two chunks of 64 images; the second gives features float16 cannot hold: the error,
    the first chunk's marker only, no manifest; the rerun extracts the second and finishes."""
    from brainencoder.inference.cache import build_feature_cache
    from brainencoder.models.encoder import create_encoder
    from brainencoder.util.errors import StoreError

    torch.manual_seed(0)
    readout = {"hidden_dim": 8, "latent_dim": 4}
    model = create_encoder("tiny", store.space, img_size=32, readout=readout)
    real, calls = model.forward_features, []

    def second_chunk_too_large(x):
        calls.append(len(x))
        return [f * (1e6 if sum(calls) > 64 else 1) for f in real(x)]

    monkeypatch.setattr(model, "forward_features", second_chunk_too_large)
    rows = np.arange(128)
    with pytest.raises(StoreError, match="for store rows 64..127, beyond float16's 65504"):
        build_feature_cache(model, store, rows, root=tmp_path / "c")
    markers = sorted(p.name for p in (tmp_path / "c").rglob("*.done"))
    assert markers and all(m.endswith("-00000000.done") for m in markers), markers
    assert not list((tmp_path / "c").rglob("manifest.json"))
    monkeypatch.setattr(model, "forward_features", real)
    cache = build_feature_cache(model, store, rows, root=tmp_path / "c")
    assert list((tmp_path / "c").rglob("manifest.json"))
    (features, *_) = cache.get(np.zeros(128, dtype=np.int64), rows)
    assert torch.isfinite(features).all() and features.abs().max() < 65504
