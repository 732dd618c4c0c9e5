"""Jobs: a researcher's script run against one frozen dataset version, in a local process pool or on Ray.

- `code`: pack a script or small folder into a size-capped zip, check and unpack it safely.
- `runner`: the backend interface (`Runner`) and what a backend is told (`JobSpec`).
- `local`: the default backend, a bounded pool of subprocesses with timeout and process-group cancel.
- `ray_backend`: the Ray Jobs API backend (`MEDCLOUD_RAY_ADDRESS`), token auth included.
- `service`: the hub side: submit, start, finish, cancel, the job's scoped token, audit events.
- `runtime`: what a job's script imports (`dataset`, `save_artifact`, `register_model`); stdlib only.
- `client`, `cli`: `medcloud jobs submit|status|logs|cancel|list|artifacts`.

The SQL is `store/jobs.py`; the routes are `hub/routes/jobs.py`.
"""

__all__: list[str] = []
