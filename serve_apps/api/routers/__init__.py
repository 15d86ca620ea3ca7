"""The HTTP routes, one `APIRouter` per area. Each reads its services from `request.app.state`."""
