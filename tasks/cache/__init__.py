"""The distributed cache: single flight under a lease, wake-ups, in-process coalescing, live build output."""
