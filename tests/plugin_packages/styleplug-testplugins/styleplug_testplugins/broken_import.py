raise ImportError("this plugin needs a module that is not installed")
