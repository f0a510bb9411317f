"""SQL analytics over everything genloom stores.

- `views.py`: the analytics views (created by migration 0007) and one line on each
- `sql.py`: ad-hoc SQL as the read-only role (`genloom sql`)
- `summary.py`: the one-screen summary (`genloom analytics summary`, end of `genloom demo`)
- `report.py`: the self-contained HTML report with plots (`genloom report`)
- `retention.py`: deleting old generations in batches (`genloom retention`)
"""
