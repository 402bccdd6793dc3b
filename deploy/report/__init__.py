"""The record of a run: the Run (steps, checks, warnings, outcome), its redacted artifact folder,
live progress, and what it leaves behind (run.json, summary.md, report.html); past runs."""
