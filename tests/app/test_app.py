"""The Hydra app: config groups compose, bad configs are rejected early, runs leave a complete record."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import torch
from hydra.errors import MissingConfigException

import pipeline
from pipeline.app.config import ConfigError, compose_config, validate
from pipeline.app.run import run
from pipeline.core.hashing import sha256_file

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = "model.example_inputs={forward:[{shape:[1,8]}]}"  # model=custom asks for them
CONF = ROOT / "conf"
USER = ROOT / "tests" / "user_backends"
SCHEMAS = ROOT / "pipeline" / "app" / "schemas"


def composed(*overrides, user_configs=False):
    extra = [f"hydra.searchpath=[file://{USER / 'conf'}]"] if user_configs else []
    return compose_config(list(overrides) + extra)


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def schema(name):
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


# ---- every config group composes into a valid request --------------------------------------------


def test_the_default_config_lowers_the_mlp_to_the_reference_backend():
    request = validate(composed())
    assert request.model_target == "pipeline.zoo.MLP"
    assert request.backend_name == "reference" and request.frontend == "export"
    assert request.debug_handles == "sequential"
    assert request.compile_spec == {
        "forward": {"constant_folding": True, "dead_code_elimination": True, "check_inputs": False}
    }


@pytest.mark.parametrize("model", [m for m in options("model") if m != "custom"])
def test_every_zoo_model_composes(model):
    request = validate(composed(f"model={model}"))
    assert request.model_target.startswith("transformers." if model.startswith("hf_") else "pipeline.zoo.")
    assert request.example_inputs["forward"].args


@pytest.mark.parametrize("frontend", options("frontend"))
def test_every_frontend_composes(frontend):
    assert validate(composed(f"frontend={frontend}")).frontend == frontend


@pytest.mark.parametrize("strategy", options("debug_handles"))
def test_every_debug_handle_strategy_composes(strategy):
    assert validate(composed(f"debug_handles={strategy}")).debug_handles == strategy


@pytest.mark.parametrize("backend", options("backend"))
def test_every_backend_composes_with_a_frontend_it_accepts(backend):
    cfg = composed(f"backend={backend}")
    accepted = pipeline.get_backend(cfg.backend.name).accepts if cfg.backend.name in pipeline.list_backends() else None
    frontend = "export" if accepted is None or "export" in accepted else "torchscript"
    request = validate(composed(f"backend={backend}", f"frontend={frontend}"))
    assert request.backend_name == backend
    assert set(request.compile_spec) == {"forward"}


@pytest.mark.parametrize("experiment", [e for e in options("experiment") if not e.startswith("sweep_")])
def test_every_experiment_preset_composes(experiment):
    validate(composed(f"experiment={experiment}"))  # sweep presets: every job is checked in test_sweeps.py


def test_a_method_can_be_added_to_the_spec_from_the_command_line():
    request = validate(
        composed(
            "model=basic", "backend.compile_spec.accum={}", "backend.compile_spec.sub_accum={constant_folding:false}"
        )
    )
    assert list(request.compile_spec) == ["forward", "accum", "sub_accum"]
    assert request.compile_spec["sub_accum"]["constant_folding"] is False


def test_the_custom_model_takes_any_importable_module():
    request = validate(composed("model=custom", EXAMPLE, "model._target_=models.SortNet"))
    assert request.model_target == "models.SortNet"


# ---- rejections, before any work starts ------------------------------------------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "backend.compile_spec.forward.constant_foldin=false",
            "backend.compile_spec.forward.constant_foldin: unknown key; allowed: 'check_inputs', 'constant_folding', "
            "'dead_code_elimination'. Did you mean 'constant_folding'?",
        ),
        (
            "backend.compile_spec.forward.constant_folding=maybe",
            "backend.compile_spec.forward.constant_folding: expected true or false, got 'maybe'",
        ),
        (
            "backend.compile_spec.fwd={}",
            "backend.compile_spec.fwd: model pipeline.zoo.MLP has no method 'fwd'; it has: 'forward'.",
        ),
        ("debug_handles.strategy=seq", "debug_handles.strategy: 'seq' is not allowed; allowed: 'none', 'sequential'"),
        (
            "frontend=torchscript frontend.mode=compile",
            "frontend.mode: 'compile' is not allowed; allowed: 'script', 'trace'",
        ),
        ("frontend.strict=yes", "frontend.strict: 'yes' is not allowed; allowed: true or false."),
        (
            "frontend=torchscript +frontend.strict=true",
            "frontend.strict=true is an option of torch.export; frontend 'torchscript' does not take it",
        ),
        (
            "model.example_inputs.forward=[{shape:[2,64],dtype:float33}]",
            "model.example_inputs.forward[0].dtype: 'float33' is not allowed; allowed: 'bfloat16'",
        ),
        (
            "model.example_inputs.forward=[{shap:[2,64]}]",
            "model.example_inputs.forward[0].shap: unknown key; allowed: 'dtype', 'high', 'low', 'shape'.",
        ),
        ("latency.iterations=many", "latency.iterations: expected an integer, got 'many'"),
        ("model._target_=pipeline.zoo.Nope", "model._target_: cannot import 'pipeline.zoo.Nope'"),
    ],
)
def test_bad_configs_name_the_key_path_and_what_is_allowed(override, message):
    with pytest.raises(ConfigError) as error:
        validate(composed(*override.split(" ")))
    assert message in str(error.value)


def test_a_frontend_the_backend_does_not_accept_is_rejected():
    with pytest.raises(ConfigError, match="backend 'jit' does not accept frontend 'export'; it accepts: 'torchscript'"):
        validate(composed("backend=jit", "frontend=export", user_configs=True))


def test_an_unknown_group_option_lists_the_available_ones():
    with pytest.raises(MissingConfigException, match="Available options in 'backend'"):
        composed("backend=refrence")


# ---- runs: outputs, schemas, reload ----------------------------------------------------------------


def run_cli(tmp_path, *overrides, user_configs=False):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(USER), os.environ.get("PYTHONPATH", "")])}
    flags = ["--config-dir", str(USER / "conf")] if user_configs else []
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *flags, f"hydra.run.dir={tmp_path}", *overrides],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path.parent,
        timeout=300,
    )


@pytest.mark.parametrize("frontend", ["export", "torchscript"])
def test_a_run_writes_artifact_handles_report_and_hydra_record(tmp_path, frontend):
    done = run_cli(tmp_path, f"frontend={frontend}", "model=basic", "backend.compile_spec.accum={}")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    handles = json.loads((tmp_path / "handles.json").read_text())
    jsonschema.validate(report, schema("report"))
    jsonschema.validate(handles, schema("handles"))
    assert report["status"] == "ok" and report["frontend"] == frontend
    mode = {"export": "strict", "torchscript": "script"}[frontend]  # strict first: its stack traces reach `accum`
    assert report["capture"] == {m: {"mode": mode, "fallback_reason": None} for m in ("forward", "accum")}
    assert report["methods"] == ["forward", "accum"]
    assert report["verify"]["passed"] and report["verify"]["trials"] == 6
    assert report["env"]["torch"] == torch.__version__
    assert {"capture", "lower", "verify", "record", "lower.preprocess"} <= set(report["timings"])
    assert (tmp_path / ".hydra" / "config.yaml").exists() and (tmp_path / "lower.log").exists()
    assert "lower.preprocess" not in done.stdout  # one line per top-level stage
    artifact = tmp_path / report["artifact"]["path"]
    assert sha256_file(artifact) == report["artifact"]["sha256"]
    lowered = pipeline.load_lowered(artifact)
    x, h = torch.randn(5), torch.randn(5)
    torch.testing.assert_close(lowered(x, h), (x + h, x - h))
    torch.testing.assert_close(lowered.accum(x, h), x + h)
    assert any(r["op"].startswith("aten::add") for r in handles["handles"])


def test_a_users_backend_runs_from_its_own_config_dir(tmp_path):
    done = run_cli(
        tmp_path, "backend=jit", "frontend=torchscript", "backend.compile_spec.forward.optimize=true", user_configs=True
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["backend"] == "jit" and report["compile_spec"] == {"forward": {"optimize": True}}


def test_a_tagger_with_token_id_inputs_runs_from_its_config(tmp_path):
    report = run_in_process(tmp_path, "model=lstm_tagger", "frontend=torchscript")
    assert report["status"] == "ok" and report["verify"]["passed"], report.get("error")


def test_a_bad_config_exits_non_zero_with_a_one_line_reason(tmp_path):
    done = run_cli(tmp_path, "backend.compile_spec.forward.constant_foldin=false")
    assert done.returncode == 2
    assert "Did you mean 'constant_folding'?" in done.stderr
    assert "Traceback" not in done.stderr


# ---- quantized runs verify against the backend's quantized tolerance --------------------------------

QUANTIZED = ("backend=onnxruntime", "backend.compile_spec.forward.quantize=int8_dynamic")


def test_a_quantized_spec_verifies_with_the_backends_quantized_tolerance():
    quantized = validate(composed(*QUANTIZED)).tolerance
    plain = validate(composed("backend=onnxruntime")).tolerance
    assert (quantized.atol, quantized.rtol) == (3e-2, 3e-2) and (plain.atol, plain.rtol) == (1e-5, 1e-4)


def test_a_quantized_spec_is_rejected_when_the_backend_declares_no_quantized_tolerance():
    with pytest.raises(
        ConfigError,
        match=r"backend.compile_spec.forward.quantize='int8_dynamic': backend "
        r"'onnxruntime' declares no quantized_tolerance.*conf/backend/onnxruntime.yaml",
    ):
        validate(composed(*QUANTIZED, "~backend.quantized_tolerance"))
    given = validate(composed(*QUANTIZED, "~backend.quantized_tolerance", "verify.tolerance={atol:0.1,rtol:0.1}"))
    assert given.tolerance.atol == 0.1


def test_a_quantized_run_records_mean_error_and_top1_agreement(tmp_path):
    report = run_in_process(tmp_path, *QUANTIZED, "model=cnn", "latency.enabled=false")
    verify = report["verify"]
    assert report["status"] == "ok" and verify["passed"] and verify["atol"] == 3e-2
    assert 0 < verify["mean_abs_err"] < verify["max_abs_err"] and verify["agreement"] >= 0.5


# ---- failures are records, not crashes -------------------------------------------------------------


def run_in_process(tmp_path, *overrides):
    report = run(validate(composed(*overrides, user_configs=True)), tmp_path)
    jsonschema.validate(report, schema("report"))
    assert json.loads((tmp_path / "report.json").read_text())["status"] == report["status"]
    return report


def test_a_model_that_does_not_build_is_recorded(tmp_path):
    report = run_in_process(tmp_path, "model=custom", EXAMPLE, "model._target_=models.NeedsArgument", "+model.width=0")
    assert report["status"] == "failed" and report["stage"] == "build"
    assert "width must be positive" in report["error"]
    assert not (tmp_path / "model.lowered").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model._target_=models.NeedsArgument"], "missing a required argument: 'width'"),
        (
            ["model._target_=models.NeedsArgument", "+model.width=3", "+model.widht=3"],
            "unexpected keyword argument 'widht'. Unknown: 'widht'. Did you mean 'width'?",
        ),
    ],
)
def test_constructor_arguments_are_bound_before_the_model_is_built(overrides, message):
    with pytest.raises(ConfigError, match="model: models.NeedsArgument") as error:
        validate(composed("model=custom", EXAMPLE, *overrides))
    assert message in str(error.value)


def test_an_op_the_backend_rejects_is_recorded_with_its_source_line(tmp_path):
    report = run_in_process(tmp_path, "model=sort")
    assert report["status"] == "failed" and report["stage"] == "lower"
    assert "aten::sort" in report["error"] and "models.py" in report["error"]
    assert not (tmp_path / "model.lowered").exists()


def test_numerics_outside_tolerance_fail_the_run(tmp_path):
    report = run_in_process(tmp_path, "backend=off_by_one", "frontend=torchscript")
    assert report["status"] == "failed" and report["stage"] == "verify"
    assert report["verify"]["passed"] is False
    assert report["verify"]["max_abs_err"] == pytest.approx(1e-3, rel=1e-2)


def test_a_backend_error_is_recorded_with_the_source_it_points_to(tmp_path):
    report = run_in_process(tmp_path, "backend=failing", "frontend=torchscript")
    assert report["status"] == "failed" and report["stage"] == "verify"
    assert "ran out of scratch memory" in report["error"]
    assert "Module hierarchy: top(MLP)" in report["error"]


def test_a_failed_cli_run_exits_non_zero_and_leaves_its_report(tmp_path):
    done = run_cli(tmp_path, "model=sort", user_configs=True)
    assert done.returncode == 1
    assert "Lowering failed in stage 'lower'" in done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["status"] == "failed"


# ---- reading outputs --------------------------------------------------------------------------------


def test_inspect_prints_the_handle_map_of_a_run_and_of_an_artifact(tmp_path):
    report = run_in_process(tmp_path, "model=basic", "profile=true")
    assert report["profile"]["supported"] and report["profile"]["top"]
    from pipeline.app import inspect as pipeline_inspect

    text = pipeline_inspect.render(pipeline_inspect.load(tmp_path))
    assert "handle map" in text and "top(BasicModule)::<unknown>.aten::add" in text
    assert "hottest source lines" in text
    data = pipeline_inspect.load(tmp_path / "model.lowered")
    assert data["manifest"]["backend"] == "reference" and data["handles"]["handles"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("seed=abc", "seed: expected an integer, got 'abc'"),
        ("threads=0", "threads: 0 is not allowed; allowed: null (torch's default) or 1..256."),
        ("profile=perhaps", "profile: expected true or false, got 'perhaps'"),
    ],
)
def test_bad_top_level_options_are_rejected(override, message):
    with pytest.raises(ConfigError) as error:
        validate(composed(override))
    assert str(error.value).startswith(message)


def test_validate_checks_a_config_without_running_it(capsys):
    from pipeline import validate as validate_command

    assert validate_command.main(["backend=onnxruntime", "model=cnn"]) == 0
    assert '"graph_optimization_level": "all"' in capsys.readouterr().out
    assert validate_command.main(["backend.compile_spec.forward.constant_foldin=false"]) == 2
    assert "Did you mean 'constant_folding'?" in capsys.readouterr().err
    assert validate_command.main(["backend=refrence"]) == 2
    assert "Available options in 'backend'" in capsys.readouterr().err
    assert validate_command.main(["--config-dir", str(USER / "conf"), "backend=jit", "frontend=torchscript"]) == 0


# ---- the CLI explains itself ------------------------------------------------------------------------


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


@pytest.mark.parametrize(
    "override, message",
    [
        ("backend=onnxruntim", "backend=onnxruntim: no such option; allowed: 'executorch', 'inductor', 'onnxruntime'"),
        ("seeed=3", "seeed: no such key; the config has: "),
        (
            "verify.enabld=false",
            "verify.enabld: no such key; verify has: 'enabled', 'random_trials', 'tolerance', 'max_elements'. "
            "Did you mean 'enabled'?",
        ),
        ("lattency.rounds=2", "lattency: no such key; the config has: 'model', "),
    ],
)
def test_hydras_own_composition_errors_exit_2_with_a_did_you_mean_and_a_report(tmp_path, override, message):
    done = cli(override, f"hydra.run.dir={tmp_path}")
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert "+" not in done.stderr  # the schema rejects keys it lacks: adding one with + would not help
    if override.startswith("backend"):
        assert "Did you mean 'onnxruntime'?" in done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["status"] == "failed" and report["stage"] == "config"


@pytest.mark.parametrize(
    "key, message",
    [
        (
            "lattency.rounds",
            "lattency: no such key; the config has: 'model', 'frontend', 'backend', 'debug_handles', "
            "'seed', 'threads', 'profile', 'artifact_name', 'partition', 'min_nodes', 'verify', 'latency'. "
            "Did you mean 'latency'?",
        ),
        (
            "verify.tolerence.atol",
            "verify.tolerence: no such key; verify has: 'enabled', 'random_trials', 'tolerance', 'max_elements'. "
            "Did you mean 'tolerance'?",
        ),
        ("latency.rounds.x", "latency.rounds.x: no such key; latency.rounds is a value (5), not a section."),
        (
            "model.widht",
            "model.widht: no such key; model has: '_target_', 'in_features', 'hidden', 'out_features', "
            "'layers', 'example_inputs', 'dynamic_shapes', 'checkpoint'. A constructor argument the model's config "
            "lacks is added with +: "
            "+model.widht=...",
        ),
    ],
)
def test_an_unknown_key_at_any_depth_names_the_missing_segment_and_what_its_parent_has(key, message):
    from pipeline.app.cli import unknown_key_message

    assert unknown_key_message(key, composed()) == message


@pytest.mark.parametrize(
    "overrides, atol, rtol",
    [
        (["verify.tolerance.atol=0"], 0.0, 1e-4),  # the backend's rtol stays
        (["verify.tolerance.rtol=0.5"], 1e-5, 0.5),
        (["verify.tolerance={atol:0,rtol:0}"], 0.0, 0.0),
        (["verify.tolerance=null"], 1e-5, 1e-4),
        (["backend.compile_spec.forward.quantize=int8_dynamic", "verify.tolerance.atol=0.5"], 0.5, 3e-2),
    ],
)
def test_verify_tolerance_overrides_the_backends_field_by_field(overrides, atol, rtol):
    tolerance = validate(composed("backend=onnxruntime", *overrides)).tolerance
    assert (tolerance.atol, tolerance.rtol) == (atol, rtol)


def test_version_names_the_project_and_torch():
    done = cli("--version")
    assert (
        done.returncode == 0
        and done.stdout.startswith("lowering-pipeline ")
        and f"torch {torch.__version__}" in done.stdout
    )


def test_help_describes_the_tool_and_its_commands_before_hydras_groups():
    text = cli("--help").stdout
    assert text.startswith("lowering-pipeline: lower a PyTorch model")
    for command in (
        "pipeline.validate",
        "pipeline.backends",
        "pipeline.inspect",
        "pipeline.replay",
        "pipeline.compare",
    ):
        assert command in text
    assert text.index("pipeline.validate") < text.index("backend: executorch, inductor")


def test_a_custom_model_needs_its_example_inputs():
    with pytest.raises(ConfigError, match="model.example_inputs is missing"):
        validate(composed("model=custom", "model._target_=torch.nn.ReLU"))


def test_the_backends_command_lists_frontends_options_defaults_code_and_availability():
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.backends", "--json"], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert {"reference", "onnxruntime", "inductor", "torchscript"} <= set(rows)
    reference = rows["reference"]
    assert (
        reference["available"] and reference["accepts"] == ["torchscript", "export"] and not reference["carries_code"]
    )
    assert {"name": "constant_folding", "type": "bool", "default": True} in reference["options"]
    assert rows["inductor"]["carries_code"] and rows["torchscript"]["carries_code"]
    text = subprocess.run(
        [sys.executable, "-m", "pipeline.backends"], capture_output=True, text=True, cwd=ROOT, timeout=300
    ).stdout
    assert "graph_optimization_level" in text and "carries code (loading needs trust_code=True)" in text


@pytest.mark.parametrize(
    "backend",
    [["backend=onnxruntime"], ["backend=torchscript", "frontend=torchscript"], ["backend=reference"]],
    ids=lambda b: b[0],
)
def test_a_profile_attributes_at_least_99_percent_of_its_time_to_source_lines(tmp_path, backend):
    report = run_in_process(tmp_path, "model=cnn", "profile=true", *backend)
    assert report["status"] == "ok", report["error"]
    profile = json.loads((tmp_path / "profile.json").read_text())
    jsonschema.validate(profile, schema("profile"))
    assert profile["attributed_share"] >= 0.99 and report["profile"]["attributed_share"] >= 0.99
    unknown = [e for e in profile["by_source"] if e["source"] == "<unknown>"]
    assert sum(e["share"] for e in unknown) <= 0.01
