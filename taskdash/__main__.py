"""``python -m taskdash``: same as the ``taskdash`` console script."""

from taskdash.cli import main

if __name__ == "__main__":
    main()
