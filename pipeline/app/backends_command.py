"""List the backends: ``python -m pipeline.backends [--json]``.

For each backend this installation knows (registered, or installed through the
``pipeline.backends`` entry points): the frontends it accepts, whether its
payload carries executable code (loading one then needs ``trust_code=True``),
whether it is available on this machine, and every compile-spec option with
its type and default, as ``backend.compile_spec.<method>.<option>=...`` sets it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from pipeline.core.errors import LoweringError
from pipeline.core.registry import get_backend, list_backends
from pipeline.core.spec import spec_fields
from pipeline.core.toolchain_output import logged


def describe() -> list[dict[str, Any]]:
    rows = []
    for name in list_backends():
        row: dict[str, Any] = {"name": name}
        try:
            info = get_backend(name)
        except LoweringError as error:
            rows.append({**row, "installed": False, "available": False, "problem": str(error)})
            continue
        try:
            available = bool(info.backend_cls().is_available())
        except Exception as error:  # a runtime that cannot even say: not available, and why
            available, row["problem"] = False, f"{type(error).__name__}: {error}"
        doc = (info.backend_cls.__doc__ or "").strip().splitlines()
        rows.append(
            {
                **row,
                "installed": True,
                "available": available,
                "accepts": list(info.accepts),
                "dynamic_shapes": list(info.dynamic_shapes),
                "carries_code": info.carries_code,
                "reproducible": info.reproducible,
                "version": info.version,
                "about": doc[0] if doc else "",
                "options": [{"name": n, "type": t, "default": d} for n, t, d in spec_fields(info.compile_spec)]
                if info.compile_spec
                else [],
            }
        )
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    out = []
    for row in rows:
        if not row["installed"]:
            out.append(f"{row['name']}: cannot be loaded: {row['problem']}\n")
            continue
        state = (
            "available"
            if row["available"]
            else "NOT available here" + (f" ({row['problem']})" if row.get("problem") else "")
        )
        payload = "carries code (loading needs trust_code=True)" if row["carries_code"] else "data only"
        out.append(f"{row['name']} {row['version'] or ''}: {row['about']}")
        dynamic = ", ".join(row["dynamic_shapes"]) or "none (static shapes only)"
        out.append(f"  frontends: {', '.join(row['accepts'])}; payload: {payload}; {state}")
        out.append(f"  dynamic shapes kept on: {dynamic}")
        width = max((len(o["name"]) for o in row["options"]), default=0)
        type_width = max((len(o["type"]) for o in row["options"]), default=0)
        for option in row["options"]:
            out.append(
                f"    {option['name']:<{width}}  {option['type']:<{type_width}}  "
                f"default {json.dumps(option['default'])}"
            )
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.backends", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    # Asking a runtime whether it is available imports it, and some print while they load: a listing
    # keeps no log, so that output goes nowhere.
    logging.getLogger("pipeline.torch").addHandler(logging.NullHandler())
    logging.getLogger("pipeline.torch").propagate = False
    with logged():
        rows = describe()
    print(json.dumps(rows, indent=2, sort_keys=True) if args.json else render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
