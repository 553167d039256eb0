"""The names of the files a run and a sweep write, in one place."""

REPORT = "report.json"  # the record of a run: status, stages, numbers, environment
HANDLES = "handles.json"  # the debug-handle map and the backend's map
PROFILE = "profile.json"  # with profile=true: per-instruction times by source line
OUTPUTS = "outputs.bin"  # the lowered outputs on the example inputs: replay compares them where bytes cannot
LOG = "lower.log"  # the job's log (hydra.job.name is "lower")
HYDRA_DIR = ".hydra"  # Hydra's record of the composed config and overrides

RUN_FILES = (REPORT, HANDLES, PROFILE, OUTPUTS, LOG, HYDRA_DIR)

SUMMARY_JSON, SUMMARY_CSV, SUMMARY_MD, SUMMARY_PNG = "summary.json", "summary.csv", "summary.md", "summary.png"
