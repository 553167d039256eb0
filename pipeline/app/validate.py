"""Check a config before any expensive work: ``python -m pipeline.validate [--config-dir DIR] [overrides]``.

Composes the config as ``python -m pipeline`` would, with the same overrides,
and validates it: model class, example inputs, frontend, backend, and every
compile-spec key and value against the backend's schema. Nothing is built,
captured or written. Prints the resolved compile spec and exits 0, or prints
what is wrong and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hydra.errors import HydraException

from pipeline.app.config import ConfigError, compose_config, validate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.validate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-dir", type=Path, help="an extra config directory, as with python -m pipeline")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. backend=onnxruntime model=cnn")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.config_dir:
        overrides.append(f"hydra.searchpath=[file://{args.config_dir.resolve()}]")
    try:
        request = validate(compose_config(overrides))
    except (ConfigError, HydraException) as error:
        print(f"Config error: {error}", file=sys.stderr)
        return 2
    print(
        f"ok: {request.model_target} -> backend {request.backend_name} ({request.frontend}"
        + (f", {request.torchscript_mode}" if request.frontend == "torchscript" else "")
        + f"), debug handles {request.debug_handles}, seed {request.seed}"
    )
    print("compile spec: " + json.dumps(request.compile_spec, sort_keys=True))
    if request.dynamic_shapes:
        print("dynamic shapes: " + json.dumps(request.dynamic_shapes, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
