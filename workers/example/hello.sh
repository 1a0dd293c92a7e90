echo "hello from a dockyard-built image"
