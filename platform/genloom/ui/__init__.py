"""The web UI at /ui in `genloom serve`: server-rendered pages over the same library, keys and tenants.

- session.py: log in with an API key → a signed, HttpOnly, SameSite=Strict cookie (keys.issue_session);
  every page checks it, the route's role and the CSRF token of every form.
- routes.py: the pages (Ask, Generations, Collections, Datasets, Runs & models, Evaluations, Analytics,
  Audit); each renders what a library function returns and paginates by keyset.
- templates/ and static/ (htmx, vendored with its licence; no Node build): shipped as package data.
"""
