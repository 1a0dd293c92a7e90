"""Build history: a record of every build and push, kept in Redis within a retention bound, and what it tells (insights)."""
