"""The farm's hosts in Redis: heartbeats, where images live and when they were used, disk budgets, recovery, metrics."""
