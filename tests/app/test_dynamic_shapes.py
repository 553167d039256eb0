"""The app's side of dynamic shapes: model.dynamic_shapes is checked before any work, verify checks each
dynamic dimension at its bounds and between (capped by verify.max_elements), and the report lists them."""

import csv
import json
from pathlib import Path

import jsonschema
import pytest
import torch

from pipeline.app.config import ConfigError, compose_config, validate
from pipeline.app.run import run
from pipeline.app.shape_points import bound_points
from pipeline.app.validate import main as validate_main
from pipeline.app.verify import verify
from pipeline.backends.reference.interpreter import ReferenceBackend
from pipeline.core.shapes import Dynamic, InputShape, MethodShapes

SCHEMAS = Path(__file__).resolve().parents[2] / "pipeline" / "app" / "schemas"
BATCH = "model.dynamic_shapes={forward:{x:{0:{name:batch,min:1,max:64}}}}"


def composed(*overrides):
    """The default model (the MLP, whose config declares a dynamic batch) with ``overrides``; a declaration
    given whole replaces the config's (Hydra merges a mapping into an existing one, so clear it first)."""
    whole = any(o.startswith("model.dynamic_shapes=") for o in overrides)
    return compose_config(["model.dynamic_shapes=null", *overrides] if whole else list(overrides))


@pytest.fixture
def keeps_dynamic_shapes(monkeypatch):
    """The backends declare themselves what they keep; the app's checks are tested apart from that."""
    monkeypatch.setattr(ReferenceBackend, "dynamic_shapes", ("export",))


# ---- the declaration is checked before any work -----------------------------------------------------


def test_the_zoo_config_declares_a_dynamic_batch_and_null_makes_it_static():
    assert validate(compose_config([])).dynamic_shapes == {
        "forward": {"x": {0: {"name": "batch", "min": 1, "max": 64}}}
    }
    assert validate(compose_config(["model.dynamic_shapes=null"])).dynamic_shapes is None


def test_auto_applies_to_every_method_lowered(keeps_dynamic_shapes):
    assert validate(composed("model.dynamic_shapes=auto")).dynamic_shapes == {"forward": "auto"}


def test_dimension_indices_given_on_the_command_line_are_indices(keeps_dynamic_shapes):
    request = validate(composed("+model.dynamic_shapes.forward.x.1={name:features,min:64,max:64}"))
    assert request.dynamic_shapes == {
        "forward": {"x": {0: {"name": "batch", "min": 1, "max": 64}, 1: {"name": "features", "min": 64, "max": 64}}}
    }


def test_a_backend_that_keeps_static_shapes_only_is_refused_before_any_work(monkeypatch):
    monkeypatch.setattr(ReferenceBackend, "dynamic_shapes", ())
    with pytest.raises(
        ConfigError, match="backend 'reference' cannot keep .* it keeps no dynamic dimensions on frontend 'export'"
    ):
        validate(composed(BATCH))


def test_a_backend_that_refuses_a_methods_options_says_why(monkeypatch, keeps_dynamic_shapes):
    monkeypatch.setattr(ReferenceBackend, "dynamic_refusal", classmethod(lambda cls, method, spec: "a test refusal"))
    with pytest.raises(ConfigError, match="model.dynamic_shapes.forward: backend 'reference' .* a test refusal"):
        validate(composed(BATCH))


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.dynamic_shapes=3", "model.dynamic_shapes: expected null (static), 'auto'"),
        ("model.dynamic_shapes={forwrd:auto}", "model.dynamic_shapes.forwrd: method 'forwrd' is not lowered"),
        ("model.dynamic_shapes={forward:{x:[0]}}", "model.dynamic_shapes.forward.x: expected a mapping"),
        ("model.dynamic_shapes={forward:{x:{first:batch}}}", "model.dynamic_shapes.forward.x.first: a dimension"),
        ("model.dynamic_shapes={forward:{y:{0:{name:batch,min:1,max:8}}}}", "model.dynamic_shapes.forward.y"),
        ("model.dynamic_shapes={forward:{x:{2:{name:batch,min:1,max:8}}}}", "model.dynamic_shapes.forward.x.2"),
        ("model.dynamic_shapes={forward:{x:{0:{name:batch,min:9,max:8}}}}", "model.dynamic_shapes.forward.x.0"),
        ("model.dynamic_shapes={forward:{x:{0:{name:batch,min:4,max:8}}}}", "model.dynamic_shapes.forward.x.0"),
        ("model.dynamic_shapes={forward:{x:{0:batch}}}", "model.dynamic_shapes.forward.x.0"),
        ("verify.max_elements=0", "verify.max_elements"),
    ],
)
def test_a_bad_declaration_names_its_key_path(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{")):
        validate(composed(override))


def test_a_trace_cannot_keep_a_dynamic_dimension():
    with pytest.raises(ConfigError, match="frontend.mode=script"):
        validate(composed("frontend=torchscript", "frontend.mode=trace", "model.dynamic_shapes=auto"))


def test_validate_exits_2_with_the_key_path_and_a_suggestion(capsys):
    assert (
        validate_main(["model.dynamic_shapes=null", "model.dynamic_shapes={forward:{xx:{0:{name:batch,min:1,max:8}}}}"])
        == 2
    )
    error = capsys.readouterr().err
    assert "model.dynamic_shapes.forward.xx" in error and "'x'" in error


# ---- verify at the bounds -------------------------------------------------------------------------


class Doubler(torch.nn.Module):
    def forward(self, x):
        return x * 2


def batch_shapes(low=1, high=64):
    return MethodShapes((InputShape("x", (Dynamic("batch", low, high), 8)),))


def test_the_points_are_each_bound_and_one_size_between_not_the_examples():
    points = bound_points(batch_shapes(), ((torch.ones(2, 8),), {}), ["x"], 2**20)
    assert points.example == {"batch": 2}
    assert [(p.label, p.point, p.call[0][0].shape[0]) for p in points.points] == [
        ("batch=min", {"batch": 1}, 1),
        ("batch=max", {"batch": 64}, 64),
        ("batch=between", {"batch": 32}, 32),
    ]
    assert all(p.capped is None for p in points.points)


def test_a_bound_equal_to_the_example_is_checked_once():
    points = bound_points(batch_shapes(1, 3), ((torch.ones(1, 8),), {}), ["x"], 2**20)
    assert [p.point for p in points.points] == [{"batch": 3}, {"batch": 2}]


def test_max_elements_lowers_a_bound_to_the_biggest_size_that_fits_and_says_so():
    points = bound_points(batch_shapes(), ((torch.ones(2, 8),), {}), ["x"], 100)  # 12 rows of 8 fit
    capped = {p.label: p.capped for p in points.points if p.capped}
    assert {label: c.to_json() for label, c in capped.items()} == {
        "batch=max": {"dimension": "batch", "requested": 64, "checked": 12}
    }  # the between size (32) capped to 12 too is checked once, as the capped max


def test_the_report_lists_each_shape_with_its_errors():
    model = Doubler()
    call = ((torch.ones(2, 8),), {})
    points = {"forward": bound_points(batch_shapes(), call, ["x"], 2**20)}
    result = verify(model, model, {"forward": [call]}, 1e-5, 1e-5, points).to_json()
    assert [(s["label"], s["point"], s["passed"]) for s in result["shapes"]] == [
        ("example", {"batch": 2}, True),
        ("batch=min", {"batch": 1}, True),
        ("batch=max", {"batch": 64}, True),
        ("batch=between", {"batch": 32}, True),
    ]
    assert result["trials"] == 4 and result["passed"]
    schema = json.loads((SCHEMAS / "report.schema.json").read_text())
    jsonschema.validate(result, schema["properties"]["verify"] | {"$defs": schema["$defs"]})


def test_a_wrong_answer_at_a_bound_fails_verify_and_names_the_shape():
    class WrongAtLargeBatches(torch.nn.Module):
        def forward(self, x):
            return x * 2 if x.shape[0] < 50 else x

    call = ((torch.ones(2, 8),), {})
    points = {"forward": bound_points(batch_shapes(), call, ["x"], 2**20)}
    result = verify(Doubler(), WrongAtLargeBatches(), {"forward": [call]}, 1e-5, 1e-5, points)
    assert not result.passed and result.worst == "forward[batch=max]"
    assert [s["passed"] for s in result.shapes] == [True, True, False, True]


def test_latency_shapes_name_declared_dimensions():
    with pytest.raises(ConfigError, match="latency.shapes: method 'forward' has no dynamic dimensions"):
        validate(composed("model.dynamic_shapes=null", "latency.shapes=[{batch:8}]"))


def test_a_latency_shape_naming_another_dimension_is_refused_with_a_suggestion(keeps_dynamic_shapes):
    with pytest.raises(ConfigError, match=r"latency.shapes\[1\].btch: .* Did you mean 'batch'"):
        validate(composed(BATCH, "latency.shapes=[{batch:8},{btch:4}]"))


# ---- a run end to end -----------------------------------------------------------------------------


def test_the_mlp_with_a_dynamic_batch_is_verified_at_its_bounds_and_timed_per_shape(tmp_path, keeps_dynamic_shapes):
    request = validate(
        composed(
            BATCH,
            "verify.max_elements=2048",  # 32 rows of 64 features: the max bound (64 rows) is capped
            "latency.shapes=[{batch:1},{batch:16}]",
            "latency.warmup=1",
            "latency.iterations=2",
            "latency.rounds=1",
        )
    )
    report = run(request, tmp_path)
    jsonschema.validate(report, json.loads((SCHEMAS / "report.schema.json").read_text()))
    assert report["status"] == "ok", report["error"]
    assert report["dynamic_shapes"] == {"forward": {"x": {"0": {"name": "batch", "min": 1, "max": 64}}}}
    assert report["shapes"]["forward"]["inputs"] == [
        {"argument": "x", "sizes": [{"name": "batch", "min": 1, "max": 64}, 64]}
    ]
    checked = [(s["label"], s["point"], s["passed"], s["capped"]) for s in report["verify"]["shapes"]]
    assert checked == [
        ("example", {"batch": 2}, True, None),
        ("batch=min", {"batch": 1}, True, None),
        ("batch=max", {"batch": 32}, True, {"dimension": "batch", "requested": 64, "checked": 32}),
    ]  # the between size (32) is the capped max: checked once
    assert [s["point"] for s in report["latency"]["shapes"]] == [{"batch": 1}, {"batch": 16}]
    assert json.loads((tmp_path / "report.json").read_text())["verify"]["shapes"] == report["verify"]["shapes"]


def test_a_sweeps_summary_gives_the_shapes_passed_and_the_latency_per_shape(tmp_path):
    from pipeline.app.summary import job_entry

    shapes = [{"point": {"batch": 1}, "lowered_us": 46.02}, {"point": {"batch": 32, "seq": 8}, "lowered_us": 172.6}]
    report = {"verify": {"shapes": [{"passed": True}, {"passed": False}]}, "latency": {"shapes": shapes}}
    entry = job_entry(0, tmp_path, report)
    assert entry["shapes_passed"] == "1/2"
    assert entry["latency_per_shape"] == "batch=1: 46 us; batch=32, seq=8: 173 us"


def _timed_job(num, tmp_path, shapes, status="ok"):
    """A job's summary entry from a report that timed ``shapes`` ({label: (point, lowered us)})."""
    from pipeline.app.summary import job_entry

    latency = {"eager_us": 100.0, "lowered_us": 50.0, "speedup": 2.0, "unstable": False}
    latency["shapes"] = [{"point": point, "lowered_us": us} for point, us in shapes]
    report = {
        "status": status,
        "backend": f"backend{num}",
        "overrides": [f"backend=backend{num}"],
        "verify": {"max_abs_err": 1e-6},
        "latency": latency if status == "ok" else None,
    }
    return job_entry(num, tmp_path / str(num), report)


def _summary_written(tmp_path, monkeypatch, jobs):
    """write_summary's files, and the figure summary.png was drawn from: its panels' titles and bar series."""
    from pipeline.app import summary as summary_module

    drawn = {}
    save_figure = summary_module.save_figure

    def keep(path, figure):
        drawn["titles"] = [axis.get_title() for axis in figure.axes]
        drawn["series"] = {
            axis.get_title(): {c.get_label(): [bar.get_width() for bar in c] for c in axis.containers}
            for axis in figure.axes
        }
        save_figure(path, figure)

    monkeypatch.setattr(summary_module, "save_figure", keep)
    summary_module.write_summary(tmp_path, {"jobs": jobs, "failed": sum(j["status"] != "ok" for j in jobs)})
    return drawn


PER_SHAPE = "Latency per shape (latency.shapes)"


def test_a_sweeps_summary_has_a_latency_column_per_shape_and_plots_them(tmp_path, monkeypatch):
    from pipeline.app.summary import summary_table

    short, long = {"batch": 1, "seq": 8}, {"batch": 8, "seq": 64}
    jobs = [
        _timed_job(0, tmp_path, [(short, 46.0), (long, 173.0)]),
        _timed_job(1, tmp_path, [(short, 30.0), (long, 120.0)]),
        _timed_job(2, tmp_path, [], status="failed"),
    ]
    headers, rows = summary_table(jobs)
    assert headers[headers.index("shapes_passed") + 1 :] == [
        "batch=1,seq=8",
        "batch=8,seq=64",
        "lowering_s",
        "overrides",
    ]
    per_shape = slice(headers.index("batch=1,seq=8"), headers.index("lowering_s"))
    assert [row[per_shape] for row in rows] == [[46.0, 173.0], [30.0, 120.0], [None, None]]

    drawn = _summary_written(tmp_path, monkeypatch, jobs)
    assert "| batch=1,seq=8 | batch=8,seq=64 |" in (tmp_path / "summary.md").read_text()
    with open(tmp_path / "summary.csv") as handle:
        assert next(csv.reader(handle))[-2:] == ["batch=1,seq=8", "batch=8,seq=64"]
    assert (tmp_path / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert drawn["titles"][-1] == PER_SHAPE
    assert drawn["series"][PER_SHAPE] == {"batch=1,seq=8": [46.0, 30.0], "batch=8,seq=64": [173.0, 120.0]}


def test_a_sweep_timed_at_its_example_shape_alone_keeps_the_speedup_plot(tmp_path, monkeypatch):
    from pipeline.app.summary import TABLE_AFTER_SHAPES, TABLE_BEFORE_SHAPES, summary_table

    jobs = [_timed_job(0, tmp_path, []), _timed_job(1, tmp_path, [])]
    assert summary_table(jobs)[0] == TABLE_BEFORE_SHAPES + TABLE_AFTER_SHAPES + ["overrides"]
    drawn = _summary_written(tmp_path, monkeypatch, jobs)
    assert drawn["titles"] == ["Speedup per configuration", "Speed against accuracy (job numbers)"]
