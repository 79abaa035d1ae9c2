"""The thin Starlette HTTP API: decode with msgspec, call a service, encode."""
