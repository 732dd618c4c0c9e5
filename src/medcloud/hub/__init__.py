"""The hub: FastAPI app factory and one thin router per resource."""
