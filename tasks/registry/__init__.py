"""What registries serve: manifest digests by HEAD, base images resolved to digests, the farm's own login."""
