"""Read what a run left behind: ``python -m pipeline.inspect PATH [--json] [--all]``.

PATH is a lowered-module artifact, a run directory or a sweep directory. Prints the manifest,
the methods and compile spec, the handle map as a table (where each handle
comes from in the source) and, for a profiled run, the hottest source lines.
Reading never compiles or runs anything from the file, never follows a path
out of the directory, and answers a malformed file with one line naming it
(exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pipeline.app.records import RecordError, named_file, parse_record, read_record
from pipeline.app.run_files import PROFILE, REPORT
from pipeline.app.summary import summarize, summary_table
from pipeline.app.tables import format_point, text_table
from pipeline.core.artifact import read_artifact
from pipeline.core.errors import ArtifactError


def load(path: Path) -> dict[str, Any]:
    """Manifest, handle map, report and profile of an artifact or a run directory, each checked first;
    for a sweep directory, the summary of its jobs."""
    result: dict[str, Any] = {"path": str(path)}
    artifact: Path | None = path
    if path.is_dir() and not (path / REPORT).exists() and any(p.name.isdigit() for p in path.iterdir()):
        result["sweep"] = summarize(path)
        return result
    if path.is_dir():
        result["report"] = read_record(path / REPORT, "report")
        artifact = named_file(path, (result["report"].get("artifact") or {}).get("path"), "artifact")
        if (path / PROFILE).exists():
            result["profile"] = read_record(path / PROFILE, "profile")
    if artifact is not None:
        contents = read_artifact(artifact)
        result["manifest"] = contents["manifest"]
        result["handles"] = parse_record(contents["handles.json"], f"{artifact}: handles.json", "handles")
        result["code"] = contents["code.py"].decode("utf-8", errors="replace")
    return result


def render(data: dict[str, Any], show_all: bool = False) -> str:
    out = []
    sweep = data.get("sweep")
    if sweep:
        out.append(f"sweep: {data['path']}: {len(sweep['jobs'])} jobs, {sweep['failed']} failed")
        out.append(text_table(*summary_table(sweep["jobs"]), max_width=None))
    report = data.get("report")
    if report:
        out.append(f"run: {data['path']}")
        out.append(
            f"status: {report['status']}"
            + (f" (stage {report['stage']}: {report['error']})" if report["status"] != "ok" else "")
        )
        if report.get("verify"):
            v = report["verify"]
            out.append(
                f"verify: max_abs_err={v['max_abs_err']:.3g} max_rel_err={v['max_rel_err']:.3g} "
                f"(atol={v['atol']:g}, rtol={v['rtol']:g}) passed={v['passed']}"
            )
        if report.get("latency"):
            lat = report["latency"]
            out.append(
                f"latency: eager {lat['eager_us']:.1f} us, lowered {lat['lowered_us']:.1f} us, "
                f"speedup {lat['speedup']:.2f}x"
            )
            out += [
                f"latency at {format_point(shape['point'])}: eager {shape['eager_us']:.1f} us, "
                f"lowered {shape['lowered_us']:.1f} us, speedup {shape['speedup']:.2f}x"
                for shape in lat.get("shapes") or ()
            ]
        out += [
            f"verify at {shape['method']} {format_point(shape['point']) or 'example'} ({shape['label']}): "
            f"max_abs_err={shape['max_abs_err']:.3g} passed={shape['passed']}"
            + (f", capped from {shape['capped']['requested']}" if shape.get("capped") else "")
            for shape in (report.get("verify") or {}).get("shapes") or ()
            if shape["point"]
        ]
    manifest = data.get("manifest")
    if manifest:
        out.append("")
        out.append(
            f"artifact: backend={manifest['backend']} frontend={manifest['frontend']} "
            f"model={manifest['original_type']} format=v{manifest['format_version']}"
        )
        out.append("versions: " + ", ".join(f"{k} {v}" for k, v in sorted(manifest["versions"].items())))
        if isinstance(manifest.get("partition"), dict):
            out.append(f"partition: {manifest['partition'].get('summary')}")
        rows = [
            [
                m,
                json.dumps(manifest["compile_spec"][m], sort_keys=True),
                "("
                + ", ".join(
                    p["name"] + ("=" + p["default"] if "default" in p else "")
                    for p in manifest["signatures"][m]["params"]
                )
                + ")",
            ]
            for m in manifest["methods"]
        ]
        out.append("")
        out.append(text_table(["method", "compile spec", "signature"], rows, max_width=None))
        shapes = manifest.get("shapes") or {}
        if shapes:
            out.append("")
            out.append("shape contract (static sizes as captured; dynamic: name[min..max]):")
            shape_rows = [
                [m, entry["argument"], "[" + ", ".join(_size_text(size) for size in entry["sizes"]) + "]"]
                for m in manifest["methods"]
                for entry in shapes.get(m, {}).get("inputs", [])
            ]
            out.append(text_table(["method", "argument", "shape"], shape_rows, max_width=None))
    handles = data.get("handles")
    if handles:
        records = handles["handles"]
        shown = records if show_all else records[:40]
        partitioned = any("partition" in r for r in records)
        rows = [
            [
                r["handle"],
                r["method"],
                r["op"],
                *([r.get("partition", "")] if partitioned else []),
                _where(r),
                _tail(r["module_hierarchy"]),
            ]
            for r in shown
        ]
        out.append("")
        out.append(
            f"handle map: {len(records)} handles ({handles['strategy']}), {len(handles['backend_map'])} backend ids"
        )
        out.append(
            text_table(
                ["handle", "method", "op", *(["partition"] if partitioned else []), "source", "module hierarchy"],
                rows,
                max_width=100,
            )
        )
        if len(shown) < len(records):
            out.append(f"... {len(records) - len(shown)} more (--all shows every handle)")
    profile = data.get("profile")
    if profile:
        rows = [
            [f"{e['seconds'] * 1e6:.1f}", f"{e['share'] * 100:.1f}%", e["source"], _tail(e["module_hierarchy"])]
            for e in profile["by_source"][:15]
        ]
        out.append("")
        out.append(f"hottest source lines ({profile['backend']}, {profile['calls']} profiled call(s)):")
        out.append(text_table(["us", "share", "source", "module hierarchy"], rows, max_width=100))
    return "\n".join(out)


def _size_text(size: Any) -> str:
    return f"{size['name']}[{size['min']}..{size['max']}]" if isinstance(size, dict) else str(size)


def _tail(hierarchy: str, width: int = 100) -> str:
    """The innermost end of a long module hierarchy: that is where the op is."""
    return hierarchy if len(hierarchy) <= width else "..." + hierarchy[-(width - 3) :]


def _where(record: dict[str, Any]) -> str:
    source = record["source"]
    if not source.get("file"):
        return "<unknown>"
    return f"{Path(source['file']).name}:{source['line']}: {source['text']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.inspect", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("path", type=Path, help="a .lowered artifact, a run directory or a sweep directory")
    parser.add_argument("--json", action="store_true", help="print everything as JSON")
    parser.add_argument("--all", action="store_true", help="show every handle, not the first 40")
    args = parser.parse_args(argv)
    try:
        data = load(args.path)
    except (ArtifactError, RecordError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(render(data, args.all))
    return 0


if __name__ == "__main__":
    sys.exit(main())
