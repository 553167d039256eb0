"""Re-run a recorded run and check that it reproduces: ``python -m pipeline.replay RUN_DIR [--out DIR]``.

The recorded ``.hydra/config.yaml`` is the composed config, so the replay does
not depend on today's ``conf/``. The run goes into a new directory; the
artifact and the handle map are compared by sha256 with the recorded files,
and the outputs on the example inputs (``outputs.bin``) within the run's
tolerance. Exit 0 only if all match; for a backend whose payload is not
byte-reproducible, the artifact's bytes need not.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from pipeline.app import outputs_record
from pipeline.app.config import ConfigError, validate
from pipeline.app.records import MAX_RECORD_BYTES, RecordError, named_file, read_record
from pipeline.app.run_files import HYDRA_DIR, REPORT
from pipeline.app.tables import text_table
from pipeline.app.targets import untrusted_targets
from pipeline.core.errors import LoweringError
from pipeline.core.hashing import sha256_file

CONFIG = f"{HYDRA_DIR}/config.yaml"


def replay(run_dir: Path, out_dir: Path | None = None, trust: bool = False) -> dict[str, Any]:
    """Re-run ``run_dir``'s recorded config into ``out_dir`` and compare what it writes with the record.

    Before anything is imported and called, every ``_target_`` in the recorded
    config is checked against an allow-list, as a string (`targets.untrusted_targets`),
    interpolations (``${...}``) are refused, and neither the run directory nor the
    working directory is importable; ``trust=True`` skips all three.
    """
    from pipeline.app.run import run

    recorded = read_record(run_dir / REPORT, "report")
    config = recorded_config(run_dir)
    interpolated = None if trust else next(interpolations(config), None)
    if interpolated:  # a resolver reads the environment or files: ${oc.env:SECRET} would land in the report
        raise UntrustedConfigError(
            f"{run_dir / CONFIG}: refusing to replay: {interpolated[0]} holds an interpolation "
            f"({interpolated[1][:60]!r}), and nothing in a received config is resolved. Replay it only if you trust "
            "where it came from: python -m pipeline.replay --trust RUN_DIR"
        )
    offending = [] if trust else untrusted_targets(config)
    if offending:
        raise UntrustedConfigError(
            f"{run_dir / CONFIG}: refusing to replay: it names {len(offending)} target(s) a run would not call:\n  "
            + "\n  ".join(offending)
            + "\nReplay it only if you trust where it came from: python -m pipeline.replay --trust RUN_DIR"
        )
    _check_checkpoint(run_dir, recorded.get("checkpoint"))
    out_dir = out_dir or _fresh_dir(run_dir)
    with contextlib.nullcontext() if trust else _received_paths_not_importable(run_dir):
        request = validate(OmegaConf.create(config))
        report = run(
            request, out_dir, extra_record={"replay_of": str(run_dir), "overrides": recorded.get("overrides", [])}
        )
    reproducible = recorded.get("reproducible") or {"artifact": True, "handles": True}
    mode = "bytes" if reproducible.get("artifact", True) else "numerics"
    checks = {part: _compare_files(run_dir, recorded, out_dir, report, part) for part in ("artifact", "handles")}
    if mode == "numerics":  # native code or TorchScript archives: the outputs must agree, not the bytes
        checks["artifact"]["required"] = False
    if mode == "numerics" or recorded.get("outputs"):  # runs recorded before outputs.bin existed have none
        checks["outputs"] = _compare_outputs(run_dir, recorded, out_dir, report)
    env_changes = {
        k: (recorded.get("env", {}).get(k), report["env"].get(k))
        for k in report["env"]
        if recorded.get("env", {}).get(k) != report["env"].get(k)
    }
    return {
        "run_dir": str(run_dir),
        "replay_dir": str(out_dir),
        "status": report["status"],
        "mode": mode,
        "checks": checks,
        "env_changes": env_changes,
        "reproducible": reproducible,
        "match": report["status"] == "ok" and all(c["match"] for c in checks.values() if c.get("required", True)),
    }


def _compare_files(
    run_dir: Path, recorded: dict[str, Any], out_dir: Path, report: dict[str, Any], part: str
) -> dict[str, Any]:
    entry = recorded.get(part) or {}
    original = named_file(run_dir, entry.get("path"), part)
    replayed = out_dir / report[part]["path"] if report.get(part) else None
    original_sha = sha256_file(original) if original and original.exists() else None
    replayed_sha = sha256_file(replayed) if replayed and replayed.exists() else None
    match = original_sha is not None and original_sha == replayed_sha
    why = None
    if not match and original is not None and replayed is not None and original_sha and replayed_sha:
        why = first_difference(original.read_bytes(), replayed.read_bytes())
    return {
        "recorded_sha256": entry.get("sha256"),
        "file_sha256": original_sha,
        "replayed_sha256": replayed_sha,
        "altered_since_recorded": original_sha is not None and original_sha != entry.get("sha256"),
        "match": match,
        "why": why,
    }


def _compare_outputs(run_dir: Path, recorded: dict[str, Any], out_dir: Path, report: dict[str, Any]) -> dict[str, Any]:
    entry, verify = recorded.get("outputs") or {}, recorded.get("verify") or {}
    original = named_file(run_dir, entry.get("path"), "outputs")
    if original is None or not original.exists() or not report.get("outputs"):
        return {"match": False, "why": "the run recorded no outputs to compare"}
    try:
        return outputs_record.compare(
            original,
            out_dir / report["outputs"]["path"],
            float(verify.get("atol", 1e-5)),
            float(verify.get("rtol", 1e-5)),
        )
    except LoweringError as error:
        return {"match": False, "why": str(error)}


def first_difference(before: bytes, after: bytes) -> str:
    """Where two records first differ: the zip member and the JSON key path, or the byte range."""
    import io
    import zipfile

    if before[:2] == after[:2] == b"PK":
        try:
            with zipfile.ZipFile(io.BytesIO(before)) as a, zipfile.ZipFile(io.BytesIO(after)) as b:
                names_a, names_b = a.namelist(), b.namelist()
                if names_a != names_b:
                    return f"the members differ: {names_a} against {names_b}"
                for name in names_a:
                    x, y = a.read(name), b.read(name)
                    if x != y:
                        return f"{name}: {first_difference(x, y)}"
        except (zipfile.BadZipFile, OSError, RuntimeError) as error:
            return f"not readable as zip: {error}"
    try:
        return _json_difference(json.loads(before), json.loads(after), "") or "same JSON, other bytes"
    except (ValueError, RecursionError):
        pass
    offset = next((i for i, (x, y) in enumerate(zip(before, after)) if x != y), min(len(before), len(after)))
    return f"bytes differ from offset {offset} ({len(before)} against {len(after)} bytes)"


def _json_difference(a: Any, b: Any, path: str) -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{path}/{key}: only in the {'replay' if key not in a else 'recorded run'}"
            found = _json_difference(a[key], b[key], f"{path}/{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        for index, (x, y) in enumerate(zip(a, b)):
            found = _json_difference(x, y, f"{path}[{index}]")
            if found:
                return found
        return f"{path}: {len(a)} items against {len(b)}" if len(a) != len(b) else None
    return None if a == b else f"{path}: {str(a)[:80]!r} recorded, {str(b)[:80]!r} replayed"


def _check_checkpoint(run_dir: Path, recorded: dict[str, Any] | None) -> None:
    """The weights the run loaded (model.checkpoint) must be the same bytes now: a replay with other
    weights would compare different models. Checked before anything runs."""
    if not recorded:
        return
    path = Path(recorded["path"])
    if not path.is_file():
        raise ConfigError(
            f"{run_dir / REPORT}: refusing to replay: the run loaded model.checkpoint {path} "
            f"(sha256 {recorded['sha256']}), and that file is missing here. Put the same file at that path."
        )
    digest = sha256_file(path)
    if digest != recorded["sha256"]:
        raise ConfigError(
            f"{run_dir / REPORT}: refusing to replay: model.checkpoint {path} has changed since the run: "
            f"recorded sha256 {recorded['sha256']}, now {digest}. Restore the file the run loaded."
        )


class UntrustedConfigError(ConfigError):
    """A received config names a target that a run would not call."""


def recorded_config(run_dir: Path) -> dict[str, Any]:
    """The composed config a run recorded, read as plain YAML data (no tags, no interpolation run)."""
    path = run_dir / CONFIG
    try:
        if path.stat().st_size > MAX_RECORD_BYTES:
            raise RecordError(f"{path}: too large to be a recorded config.")
        config = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RecordError(f"{run_dir}: no {CONFIG}; is this a run directory of `python -m pipeline`?") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as error:
        raise RecordError(f"{path}: not a readable YAML config: {str(error).splitlines()[0]}") from None
    if not isinstance(config, dict) or not all(isinstance(key, str) for key in config):
        raise RecordError(
            f"{path}: not a recorded config: expected a mapping of option names, got {type(config).__name__}."
        )
    return config


def interpolations(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """``(key path, text)`` of every string in a YAML document that OmegaConf would resolve (``${...}``)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from interpolations(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from interpolations(value, f"{path}[{index}]")
    elif isinstance(node, str) and "${" in node:
        yield path or "the config", node


@contextlib.contextmanager
def _received_paths_not_importable(run_dir: Path) -> Iterator[None]:
    """Within the block, neither the run directory nor the working directory is on ``sys.path`` (``python -m``
    puts the working directory first): a module shipped beside a record must not shadow an allowed target's."""
    here = {str(Path.cwd().resolve()), str(Path(run_dir).resolve())}
    saved = sys.path[:]
    sys.path[:] = [entry for entry in saved if entry and str(Path(entry).resolve()) not in here]
    try:
        yield
    finally:
        sys.path[:] = saved


def _fresh_dir(run_dir: Path) -> Path:
    for n in range(1, 10_000):
        candidate = run_dir.parent / f"{run_dir.name}.replay{n}"
        if not candidate.exists():
            return candidate
    raise RuntimeError(f"no free replay directory next to {run_dir}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.replay", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, help="where the replay writes (default: RUN_DIR.replayN beside it)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--trust", action="store_true", help="replay even if the recorded config names targets a run would not call"
    )
    args = parser.parse_args(argv)
    try:
        result = replay(args.run_dir, args.out, trust=args.trust)
    except (ConfigError, RecordError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        rows = [
            [
                part,
                c["match"] if c.get("required", True) else f"{c['match']} (not required)",
                (c.get("file_sha256") or "-")[:16],
                (c.get("replayed_sha256") or "-")[:16],
                "yes" if c.get("altered_since_recorded") else "no",
                c.get("why") or "",
            ]
            for part, c in result["checks"].items()
        ]
        print(f"replayed {result['run_dir']} into {result['replay_dir']} (status {result['status']})")
        print(
            f"mode: {result['mode']} ("
            + (
                "artifact and handles byte for byte"
                if result["mode"] == "bytes"
                else "handles byte for byte, outputs within the run's tolerance: this backend's payload is not "
                "byte-reproducible"
            )
            + ")"
        )
        print(
            text_table(
                ["part", "match", "recorded file", "replayed", "altered since run", "first difference"],
                rows,
                max_width=None,
            )
        )
        for key, (before, after) in result["env_changes"].items():
            print(f"note: {key} was {before}, is {after}")
        print("MATCH" if result["match"] else "MISMATCH")
    return 0 if result["match"] else 1


if __name__ == "__main__":
    sys.exit(main())
