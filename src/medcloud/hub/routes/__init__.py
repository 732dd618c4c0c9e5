"""One router module per resource; `medcloud.hub.app.ROUTERS` names those the app includes."""
