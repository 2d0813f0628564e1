"""Release gates over seeds for worldflux families. A plain library: no Dagster import.

records = quality.sweep.execute(SweepConfig(("dreamerv3",), (0, 1, 2), steps=300))
report = quality.sweep.family_report("dreamerv3", records)
quality.report.write_report(report, Path("reports/quality-gates"))
"""
