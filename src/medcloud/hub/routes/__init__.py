"""One router module per resource, each exporting `router`; `medcloud.hub.app.ROUTERS` names those the app
includes (imported by name there, so this package exports nothing itself)."""

__all__: list[str] = []
