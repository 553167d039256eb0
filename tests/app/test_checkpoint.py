"""model.checkpoint=PATH: the user's own weights are the ones lowered, recorded by digest, and checked by replay."""

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file
from test_app import run_cli

from pipeline.app import outputs_record, replay
from pipeline.app.config import ConfigError, compose_config, validate
from pipeline.app.inputs import make_method_calls
from pipeline.app.run import model_arguments, run
from pipeline.core.hashing import sha256_file
from pipeline.zoo import MLP

FAST = ["latency.enabled=false"]


@pytest.fixture(scope="module")
def trained():
    """The zoo MLP after a few seeded steps of training: weights the seeded random init cannot give."""
    torch.manual_seed(1234)
    model = MLP()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
    for _ in range(5):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


def lowered_outputs(request, out_dir):
    report = run(request, out_dir)
    assert report["status"] == "ok", report["error"]
    _, recorded = outputs_record.read(out_dir / "outputs.bin")
    return report, recorded["forward"][0]


@pytest.mark.parametrize(
    ("backend", "suffix"), [("reference", ".pt"), ("reference", ".safetensors"), ("onnxruntime", ".safetensors")]
)
def test_the_lowered_module_computes_the_trained_weights(tmp_path, trained, suffix, backend):
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pt":
        torch.save(trained.state_dict(), path)
    else:
        save_file(trained.state_dict(), path)
    request = validate(compose_config([f"backend={backend}", f"model.checkpoint={path}", *FAST]))
    report, output = lowered_outputs(request, tmp_path / "run")

    ((args, kwargs),) = make_method_calls(request.example_inputs, request.seed).values()
    with torch.no_grad():
        torch.testing.assert_close(output, trained(*args, **kwargs), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(output, validate_default_model()(*args, **kwargs), atol=1e-3)
    assert report["checkpoint"] == {"path": str(path), "sha256": sha256_file(path), "bytes": path.stat().st_size}


def validate_default_model():
    from pipeline.app.run import build_model

    return build_model(validate(compose_config([])))


def test_a_run_without_a_checkpoint_records_null(tmp_path):
    report, _ = lowered_outputs(validate(compose_config(FAST)), tmp_path / "run")
    assert report["checkpoint"] is None


def test_a_checkpoint_of_another_model_names_missing_unexpected_and_reshaped_keys(tmp_path, trained):
    state = trained.state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["head.bias"]
    state["head.weight"] = torch.zeros(3, 128)
    path = tmp_path / "other.pt"
    torch.save(state, path)
    with pytest.raises(ConfigError) as caught:
        run_build(path)
    message = str(caught.value)
    assert "1 missing keys: head.bias" in message and "1 unexpected keys: extra.weight" in message
    assert "head.weight [3, 128] (model: [10, 128])" in message and str(path) in message


def run_build(path):
    from pipeline.app.run import build_model

    return build_model(validate(compose_config([f"model.checkpoint={path}"])))


class Payload:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('RAN').write_text('the payload ran')",))


def test_a_pickle_naming_code_is_refused_and_never_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "hostile.pt"
    path.write_bytes(pickle.dumps({"weight": Payload()}, protocol=2))  # the protocol torch.save writes
    with pytest.raises(ConfigError, match="weights_only=True refused it"):
        run_build(path)
    assert not (tmp_path / "RAN").exists()


def test_a_wrapped_state_dict_is_unwrapped_only_when_unambiguous(tmp_path, trained):
    path = tmp_path / "wrapped.pt"
    torch.save({"state_dict": trained.state_dict(), "epoch": 3}, path)
    model = run_build(path)
    torch.testing.assert_close(model.head.weight, trained.head.weight)
    torch.save({"state_dict": trained.state_dict(), "model": trained.state_dict()}, path)
    with pytest.raises(ConfigError, match="no unambiguous state dict"):
        run_build(path)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing.pt", "does not exist"),
        ("weights.ckpt", "allowed: .safetensors, .pt, .pth, .bin"),
        ("dir.pt", "not a regular file"),
    ],
)
def test_a_bad_checkpoint_path_is_refused_before_any_work(tmp_path, name, message):
    (tmp_path / "dir.pt").mkdir()
    (tmp_path / "weights.ckpt").write_bytes(b"")
    with pytest.raises(ConfigError, match=message):
        validate(compose_config([f"model.checkpoint={tmp_path / name}"]))


def test_a_relative_checkpoint_path_is_taken_from_the_working_directory(tmp_path, trained, monkeypatch):
    torch.save(trained.state_dict(), tmp_path / "weights.pt")
    monkeypatch.chdir(tmp_path)
    assert validate(compose_config(["model.checkpoint=weights.pt"])).checkpoint == str(tmp_path / "weights.pt")


def test_replay_refuses_a_changed_or_missing_checkpoint(tmp_path, trained):
    path = tmp_path / "weights.safetensors"
    save_file(trained.state_dict(), path)
    run_dir = tmp_path / "run"
    done = run_cli(run_dir, f"model.checkpoint={path}", *FAST)
    assert done.returncode == 0, done.stderr[-2000:]
    recorded = json.loads((run_dir / "report.json").read_text())["checkpoint"]["sha256"]
    assert replay.replay(run_dir)["match"]

    save_file({k: v + 1 for k, v in trained.state_dict().items()}, path)
    with pytest.raises(ConfigError, match=f"recorded sha256 {recorded}, now {sha256_file(path)}"):
        replay.replay(run_dir)
    path.unlink()
    with pytest.raises(ConfigError, match="missing here"):
        replay.replay(run_dir)


def test_a_null_hf_config_builds_the_config_class_defaults():
    transformers = pytest.importorskip("transformers")
    arguments = model_arguments(transformers.BertModel, {"config": None})
    assert arguments["config"].to_dict() == transformers.BertConfig().to_dict()
    cfg = compose_config(["model=hf_bert", "model.config=null"])
    assert cfg.model.config is None
    assert validate(cfg).model_kwargs["config"] is None
