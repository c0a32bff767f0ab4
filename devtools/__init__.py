"""Developer tooling that is not deployed: the in-process local API (`make serve`) and its SAM CLI adapter."""
