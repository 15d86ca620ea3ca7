"""The HTTP side: the FastAPI app and the Ingress replica, schemas, views of jobs, event streams, routers."""
