"""Cohorts and frozen dataset versions for researchers: the manifest format (`manifest`), the hub client
and CLI (`client`, `cli`). The SQL lives in `store.datasets`; the HTTP routes in `hub.routes.datasets`.

Kept import-light: `store` imports `datasets.manifest`, so nothing here may import `store`.
"""
