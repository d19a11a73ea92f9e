pytest_plugins = ["styleplug.testing"]
