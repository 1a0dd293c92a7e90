"""The worker's side of build, tag and push on one host: cache, single flight and the host that holds the image."""
