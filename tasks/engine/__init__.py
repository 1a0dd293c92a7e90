"""One Docker engine: the connection, the build and push operations, buildx, images and their disk use."""
