"""`ttft-router bench`: the published TTFT measurement method, on demand, with a report.

plan.py (pairs, method, pacing, judgement), samplefile.py (the JSONL samples file),
runner.py (the round-robin loop), report.py (figures, verdicts, renderings), plots.py
(pictures, matplotlib lazily), progress.py (live display), job.py (check, run, publish),
importer.py (samples into a store), cli.py (the bench, report and import commands: their
arguments and their output). Statistics come from `proxy.learning.stats` only and the TTFT
clock from `proxy.upstream.measure` only.
"""
