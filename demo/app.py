"""Start the styleplug web demo: python demo/app.py [--host 127.0.0.1] [--port 7860] [--share]."""

from styleplug.frontends.cli import main

if __name__ == "__main__":
    import sys

    main(["demo", *sys.argv[1:]])
