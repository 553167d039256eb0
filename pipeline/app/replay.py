"""Re-run a recorded run and check that it reproduces: ``python -m pipeline.replay RUN_DIR [--out DIR]``.

The recorded ``.hydra/config.yaml`` is the composed config, so the replay does
not depend on today's ``conf/``. The run goes into a new directory; the
artifact and the handle map are compared by sha256 with the recorded files.
Exit 0 only if both match.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional

from omegaconf import OmegaConf

import yaml

from pipeline.core.hashing import sha256_file
from pipeline.app.config import ConfigError, validate
from pipeline.app.records import MAX_RECORD_BYTES, RecordError, named_file, read_record
from pipeline.app.run_files import HYDRA_DIR, REPORT
from pipeline.app.tables import text_table
from pipeline.app.targets import untrusted_targets

CONFIG = f"{HYDRA_DIR}/config.yaml"


def replay(run_dir: Path, out_dir: Optional[Path] = None, trust: bool = False) -> Dict[str, Any]:
    """Re-run ``run_dir``'s recorded config into ``out_dir`` and compare what it writes with the record.

    Before anything is imported and called, every ``_target_`` in the recorded
    config is checked (`targets.untrusted_targets`); ``trust=True`` skips that.
    """
    from pipeline.app.run import run

    recorded = read_record(run_dir / REPORT, "report")
    config = recorded_config(run_dir)
    offending = [] if trust else untrusted_targets(config)
    if offending:
        raise UntrustedConfigError(
            f"{run_dir / CONFIG}: refusing to replay: it names {len(offending)} target(s) a run would not call:\n  "
            + "\n  ".join(offending)
            + "\nReplay it only if you trust where it came from: python -m pipeline.replay --trust RUN_DIR")
    out_dir = out_dir or _fresh_dir(run_dir)
    request = validate(OmegaConf.create(config))
    report = run(request, out_dir, extra_record={"replay_of": str(run_dir), "overrides": recorded.get("overrides", [])})
    checks = {}
    for part in ("artifact", "handles"):
        entry = recorded.get(part) or {}
        original = named_file(run_dir, entry.get("path"), part)
        replayed = out_dir / report[part]["path"] if report.get(part) else None
        original_sha = sha256_file(original) if original and original.exists() else None
        replayed_sha = sha256_file(replayed) if replayed and replayed.exists() else None
        checks[part] = {
            "recorded_sha256": entry.get("sha256"),
            "file_sha256": original_sha,
            "replayed_sha256": replayed_sha,
            "altered_since_recorded": original_sha is not None and original_sha != entry.get("sha256"),
            "match": original_sha is not None and original_sha == replayed_sha,
        }
    env_changes = {k: (recorded.get("env", {}).get(k), report["env"].get(k))
                   for k in report["env"] if recorded.get("env", {}).get(k) != report["env"].get(k)}
    return {"run_dir": str(run_dir), "replay_dir": str(out_dir), "status": report["status"],
            "checks": checks, "env_changes": env_changes,
            "reproducible": recorded.get("reproducible", {"artifact": True, "handles": True}),
            "match": report["status"] == "ok" and all(c["match"] for c in checks.values())}


class UntrustedConfigError(ConfigError):
    """A received config names a target that a run would not call."""


def recorded_config(run_dir: Path) -> Dict[str, Any]:
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
        raise RecordError(f"{path}: not a recorded config: expected a mapping of option names, "
                          f"got {type(config).__name__}.")
    return config


def _fresh_dir(run_dir: Path) -> Path:
    for n in range(1, 10_000):
        candidate = run_dir.parent / f"{run_dir.name}.replay{n}"
        if not candidate.exists():
            return candidate
    raise RuntimeError(f"no free replay directory next to {run_dir}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, help="where the replay writes (default: RUN_DIR.replayN beside it)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--trust", action="store_true",
                        help="replay even if the recorded config names targets a run would not call")
    args = parser.parse_args(argv)
    try:
        result = replay(args.run_dir, args.out, trust=args.trust)
    except (ConfigError, RecordError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        rows = [[part, c["match"], (c["file_sha256"] or "-")[:16], (c["replayed_sha256"] or "-")[:16],
                 "yes" if c["altered_since_recorded"] else "no"] for part, c in result["checks"].items()]
        print(f"replayed {result['run_dir']} into {result['replay_dir']} (status {result['status']})")
        print(text_table(["part", "match", "recorded file", "replayed", "altered since run"], rows))
        for key, (before, after) in result["env_changes"].items():
            print(f"note: {key} was {before}, is {after}")
        if not result["reproducible"].get("artifact", True):
            print("note: this backend's payload is not byte-reproducible (native code); an artifact mismatch is expected")
        print("MATCH" if result["match"] else "MISMATCH")
    return 0 if result["match"] else 1


if __name__ == "__main__":
    sys.exit(main())
