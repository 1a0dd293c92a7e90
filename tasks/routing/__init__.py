"""Where a task message goes: the router, the fast lane, lineage placement, the broker watch of a failover."""
