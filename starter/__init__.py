"""The client side: the Python client for backends, the CLI, and `tidings dev`."""
