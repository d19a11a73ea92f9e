"""The built-in losses and networks, registered through the same hooks third-party plugins use."""
