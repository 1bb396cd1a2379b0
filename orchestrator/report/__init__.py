"""`dualsweep report`, its pure core: from a sweep's plan and trials (model.py) to statistics
(stats.py), claim verdicts (claims.py), the rounds of seeds until decided (rounds.py), figures
(figures.py) and the written report (render.py).

Nothing here reads a sweep directory, imports Ray or talks to MLflow; the caller gathers the trials
and logs the files. Typical use:

    from orchestrator.report.render import write_report
    files = write_report(info, trials, sweep_dir / "report")
    files.verdicts, files.html, files.figures

Only claims.py (the sweep schema's ClaimSpec) and rounds.py (the plan's confidence) are imported by
the sweep spec; neither imports matplotlib, nor scipy until an interval is computed.
"""
