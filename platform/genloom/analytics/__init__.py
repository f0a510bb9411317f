"""SQL analytics over everything genloom stores.

- `views/`: one `.sql` file per analytics view (its description in a header comment); migrations
  create the views from a pinned copy of these files, `genloom analytics views` lists them
- `sql.py`: ad-hoc SQL as the read-only role (`genloom sql`)
- `summary.py`: the one-screen summary (`genloom analytics summary`, end of `genloom demo`)
- `report.py`: the self-contained HTML report with plots (`genloom report`)
- `retention.py`: deleting old generations in batches (`genloom retention`)
"""
