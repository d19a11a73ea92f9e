"""The plugin host (discovery, registration, failures named by plugin) and the new-plugin scaffolds."""
