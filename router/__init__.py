"""The router: route snapshots, the `/pub/job/...` reverse proxy and its auth check."""
